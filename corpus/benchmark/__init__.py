"""The SurgRec downstream benchmark rebuilt from native annotations: specs, clip planning, audit, build."""
