"""Methods by name: one file per method, one ``@register`` line each."""

from __future__ import annotations

from psgd.errors import ConfigError
from psgd.methods.base import Method
from psgd.methods.theory import Constants
from psgd.registry import Registry

_METHODS: Registry[type[Method]] = Registry("method")
register = _METHODS.register
method_class = _METHODS.get
registered = _METHODS.registered


def build(options, task=None, constants: Constants | None = None) -> Method:
    """The method the options name, ready to run.

    ``task`` (or ``constants`` directly, as ``psgd.simulate`` gives them) lends n, d and, for
    tasks that know them, L and mu: lr = "theory" is resolved from them and strict_theory is
    enforced. Without either, only the checks that need no task run (config validation).
    A task with layers hands their sizes to every compressor that splits by layer or bucket
    (one without an explicit ``layers=``), on the server and the workers alike.
    Every refusal is a ConfigError (a ValueError), so jobs end with one line and exit code 2.
    """
    if constants is None and task is not None:
        constants = Constants.of(task)
    try:
        method = method_class(options.name)(options, constants)
        sizes = task.layer_sizes() if task is not None else None
        if sizes and len(sizes) > 1:
            method.use_layers(sizes)
        if task is not None and not options.decay_norm_and_bias:
            method.decay_mask = task.decay_mask()
            if method.decay_mask is None:
                raise ConfigError(f"method.decay_norm_and_bias = false: task {task.name!r} has no layers to exempt")
        return method
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None
