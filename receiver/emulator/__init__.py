"""A fake Tencent Cloud VOD on loopback that speaks the real protocol (API 3.0, COS, pushes).

    from receiver.emulator import Emulator
    with Emulator() as emu:
        HttpProfile(protocol="http", endpoint=emu.api_endpoint)
        CosConfig(..., Scheme="http", IP=emu.cos_ip, Port=emu.cos_port)

    with Emulator(mode="PULL", event_handle_seconds=1.0) as emu:   # the reliable callback
        emu.enqueue(body_dict)          # any callback body, for PullEvents
        emu.event_queue.snapshot()      # depth, in flight, confirmed, deliveries, redeliveries

See docs/emulator.md. It imports receiver's pure helpers (auth.sign); receiver never imports it.
"""
from .push import PushPolicy
from .server import Emulator

__all__ = ["Emulator", "PushPolicy"]
