"""Thin trainers on our builds: one loop, one video ViT, one recipe per module.

=========================  ==========================================================================
``trainers/recipe.py``     the recipe interface and ``RECIPES`` (name -> module), the only registry
``trainers/loop.py``       the training loop (CPU, GPU, torchrun/DDP; accumulation; exact resume)
``trainers/data.py``       ``ClipStream``: weighted shard sampling, decoding in workers, torch augmentations
``trainers/vit.py``        the shared video ViT (S/B/L, tubelet 2x16x16, SDPA attention)
``trainers/config.py``     YAML configs -> typed sections (``configs/*.yaml``)
``trainers/schedule.py``   warm-up + cosine
``trainers/checkpoint.py`` save/resume, ``load_encoder(path) -> (encoder, config)`` for evaluation
``trainers/metrics.py``    ``metrics.jsonl``
``trainers/mae.py``        SurgRec-MAE (VideoMAE recipe)
``trainers/jepa.py``       SurgRec-JEPA (V-JEPA recipe)
``trainers/hierskp.py``    HierSKP (its own issue; with ``hierarchy_data``, ``text``, ``softdtw``)
=========================  ==========================================================================

Read ``trainers/recipe.py`` to add a recipe: one module, one registry line, one config; the loop is not touched.
``trainers`` imports ``corpus`` (and ``builders``), never ``cli``.
"""
