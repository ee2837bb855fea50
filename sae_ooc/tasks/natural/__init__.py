"""`task.render: natural`: the task families rendered as natural-language documents and questions over a real
tokenizer (render.py: texts; bpe.py: the tokenizer; generate.py: alignment, checks, the layout; text_vocab.py:
the vocabulary the stages read; lists.py and data/: the shipped name and relation lists)."""
