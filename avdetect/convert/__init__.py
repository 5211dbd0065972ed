"""Weight converters: checkpoints of other implementations -> avdetect variables files.

    python -m avdetect.convert talknet CKPT --out FILE.msgpack

Subcommands: ``talknet`` (:mod:`avdetect.convert.talknet`, the TalkNet / CMDFD student).
The file format is :mod:`avdetect.convert.variables_file`; the trainer starts from such a
file with ``config.init_from``.
"""
