"""Dynamic batching: the batcher task and its engine workers, the pure function that collects
the next batch from a queue snapshot, the warm-up batches, and the record of a pending request.

May import: ``rmserve.engine``, ``rmserve.text``, ``rmserve.rewards``,
``rmserve.observability``, ``rmserve.artifact``, ``rmserve.errors``.
"""
