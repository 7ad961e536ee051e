"""The HTTP adapters for RL stacks' remote reward protocols (OpenRLHF ``/get_reward``, vLLM's
``/classify`` as verl calls it, slime's remote RM), one module each, behind one aiohttp front
with its own error table.

May import: ``rmserve.serving`` and below; never ``rmserve.grpc`` or ``rmserve.server.app``.
"""
