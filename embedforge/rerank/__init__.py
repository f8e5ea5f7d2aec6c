"""Cross-encoder re-ranking: :mod:`embedforge.rerank.model` loads one and scores pairs (the one
scorer behind ``embedforge search --rerank``, ``/v1/search`` and ``/v1/rerank``);
:mod:`embedforge.rerank.train` trains one (``embedforge train-reranker``).

The package itself imports nothing, so loading the scorer never pulls in the training code.
"""
