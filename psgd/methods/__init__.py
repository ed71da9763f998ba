"""Algorithms as pure worker and server rules; importing a method's file registers it."""

from psgd.methods import adiana, cser, diana, doublesqueeze, ef14, ef21, hard_threshold, liec, sgd  # noqa: F401
from psgd.methods.base import Context, Method, Oracle
from psgd.methods.options import MethodOptions
from psgd.methods.registry import build, method_class, registered

__all__ = ["Context", "Method", "MethodOptions", "Oracle", "build", "method_class", "registered"]
