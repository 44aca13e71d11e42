"""What the gateway and the runners share as ASGI servers: loopback sockets and the event loop
(``serving``), and cancelling work whose client has gone (``disconnect``)."""
