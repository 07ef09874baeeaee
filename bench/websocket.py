"""WebSocket relay figures for bench/websocket.sh: round-trip latency per message, direct to the echo
upstream and through sidekey, and sidekey's resident memory per idle relayed socket.

    python3 bench/websocket.py echo PORT
    python3 bench/websocket.py measure DIRECT_URL PROXIED_URL TOKEN SIDEKEY_PID MESSAGES SOCKETS
"""
import asyncio, json, statistics, sys, time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


async def echo(port):
    async def handler(ws):
        async for message in ws:
            await ws.send(message)
    async with serve(handler, "127.0.0.1", port, max_size=None, compression=None):
        await asyncio.Future()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def timed(ws, payload, count, samples):
    for _ in range(count):
        started = time.perf_counter_ns()
        await ws.send(payload)
        await ws.recv()
        samples.append((time.perf_counter_ns() - started) / 1000)


def summary(samples):
    samples = sorted(samples)
    return {"p50_us": round(samples[len(samples) // 2], 1), "p99_us": round(samples[int(len(samples) * 0.99)], 1),
            "mean_us": round(statistics.mean(samples), 1)}


async def measure(direct, proxied, token, pid, messages, sockets):
    protocols = ["sidekey", "sidekey-token." + token]
    payload = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 200})
    # Both sockets open at once, measured in alternating blocks, so that the machine's drift (other
    # processes, CPU frequency) falls on both alike.
    async with connect(direct, compression=None, max_size=None) as plain, \
            connect(proxied, subprotocols=protocols, compression=None, max_size=None) as relayed:
        for ws in (plain, relayed):
            await timed(ws, payload, 200, [])  # warm-up
        samples = {"direct": [], "proxied": []}
        block = max(1, messages // 20)
        for _ in range(20):
            await timed(plain, payload, block, samples["direct"])
            await timed(relayed, payload, block, samples["proxied"])
    result = {name: summary(values) for name, values in samples.items()}
    for key in ("p50_us", "p99_us"):
        result["added_per_direction_" + key] = round((result["proxied"][key] - result["direct"][key]) / 2, 1)
    await asyncio.sleep(1)
    before = rss_kib(pid)
    held = []
    for _ in range(sockets):
        ws = await connect(proxied, subprotocols=protocols, compression=None)
        await ws.send("hello")
        await ws.recv()
        held.append(ws)
    await asyncio.sleep(2)
    after = rss_kib(pid)
    per_socket = (after - before) * 1024 / sockets
    result["memory"] = {"sockets": sockets, "rss_before_kib": before, "rss_after_kib": after,
                        "bytes_per_socket": round(per_socket),
                        "sockets_per_gib": round(2**30 / per_socket) if per_socket > 0 else None}
    for ws in held:
        await ws.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        asyncio.run(echo(int(sys.argv[2])))
    else:
        direct, proxied, token, pid, messages, sockets = sys.argv[2:8]
        asyncio.run(measure(direct, proxied, token, int(pid), int(messages), int(sockets)))
