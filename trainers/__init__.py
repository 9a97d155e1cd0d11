"""surgcorpus."""
