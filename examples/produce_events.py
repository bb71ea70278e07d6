"""Send your own events to stream-al with plain kafka-python.

The engine reads any JSON object; `input` in the config says where the id, the timestamp and the
features are. This script sends events in the default shape, `{id, ts, features}`:

    python examples/produce_events.py --bootstrap localhost:9092 --count 1000
"""

import argparse
import random
import time

import orjson
from kafka import KafkaProducer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="localhost:9092")
    parser.add_argument("--topic", default="events")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    producer = KafkaProducer(bootstrap_servers=args.bootstrap)
    rng = random.Random(0)
    for i in range(args.count):
        event = {
            "id": f"tx-{i}",
            "ts": time.time(),
            "features": {"amount": round(rng.lognormvariate(3.5, 1.0), 2), "country": rng.choice(["FR", "DE", "US"]),
                         "online": rng.random() < 0.4, "merchant_risk": rng.random()},
        }
        producer.send(args.topic, orjson.dumps(event), key=event["id"].encode())
    producer.flush()
    print(f"sent {args.count} events to {args.topic}")


if __name__ == "__main__":
    main()
