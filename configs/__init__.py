"""ml_collections configs, one file per method: ``configs/<method>.py:get_config(arg)``.

``arg`` is a comma-separated string parsed by :func:`configs.common.parse_arg`, e.g.
``configs/corrdistill.py:tiny`` or ``configs/cad.py:tiny,window=25,batch=8``; every other
knob (each ablation included) is a ``--config.<path>=<value>`` override.
"""
