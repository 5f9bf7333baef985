"""One BLAS thread for a scoring process (the worker's and the backtest's), without the
worker's imports."""

from __future__ import annotations

__all__ = ["one_numeric_thread"]


def one_numeric_thread() -> None:
    """Let numpy's BLAS use one thread: a worker scores on one core (the event loop holds the
    GIL), and BLAS threads spinning for cores that Kafka, Redis and other workers use made a
    1 x 256 by 256 x 4,000 product (a customer's content scores) take 8.9 ms instead of
    0.14 ms on the 2-core benchmark machine."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
