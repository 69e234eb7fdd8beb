"""gp-lite: GlobalPointer named-entity recognition, a pure-Rust CPU trainer and runtime.

    import gp_lite
    model = gp_lite.Model.load("model/")
    model.predict(["浙商银行企业信贷部叶老桂博士"])   # [[Entity(start=0, end=4, label='company', ...), ...]]

`train(...)` takes the command line's options as keyword arguments; `evaluate(...)` scores a
model on a labelled file. The work runs in Rust with the GIL released; errors are `GpLiteError`.
"""
from ._gp_lite import Entity, GpLiteError, Model, evaluate, train

__all__ = ["Entity", "GpLiteError", "Model", "evaluate", "train"]
