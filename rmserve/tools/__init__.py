"""Tools that use a served or exported model: ``rmserve eval`` (an artifact scored by
onnxruntime against a preference file) and ``rmserve loadtest`` (capacity planning through the
client).

May import: ``rmserve.client``, ``rmserve.engine``, ``rmserve.text``, ``rmserve.rewards``.
"""
