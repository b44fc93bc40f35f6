"""Text: documents, tokenizers, the tokenized corpus and its packed windows.

* ``documents``: the documents of ``data.path`` (files, ``builtin:stdlib``, ``hf:``) and
  the validation split by a hash of their names.
* ``tokenizer``: the byte tokenizer and Hugging Face ``tokenizer.json`` files.
* ``corpus``: documents tokenized into train and validation streams, or a prepared
  (memory-mapped) folder.
* ``windows``: windows of ``data.seq_len + 1`` tokens and their batches.
* ``source``: the text source for the training loop.
"""

from train.data.text.corpus import (
    PREPARED_FORMAT,
    Corpus,
    load_corpus,
    token_dtype,
    tokenize_documents,
)
from train.data.text.documents import BUILTIN_STDLIB, check_source, is_validation, iter_documents
from train.data.text.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer, padded_vocab_size
from train.data.text.windows import PackedWindows, eval_batches, train_batches

__all__ = [
    "BUILTIN_STDLIB",
    "PREPARED_FORMAT",
    "ByteTokenizer",
    "Corpus",
    "HFTokenizer",
    "PackedWindows",
    "check_source",
    "eval_batches",
    "is_validation",
    "iter_documents",
    "load_corpus",
    "load_tokenizer",
    "padded_vocab_size",
    "token_dtype",
    "tokenize_documents",
    "train_batches",
]
