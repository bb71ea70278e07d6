"""A minimal analyst at the terminal: read label requests, type the answer, it goes to `labels`.

    python examples/answer_requests.py --bootstrap localhost:9092 --classes legit,fraud

Each request shows the event's features, the model's scores and why it was asked. Type the class
number, `s` to skip, or `q` to quit. The engine learns from the answer as soon as it arrives.
"""

import argparse
import time

import orjson
from kafka import KafkaConsumer, KafkaProducer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="localhost:9092")
    parser.add_argument("--requests-topic", default="label-requests")
    parser.add_argument("--labels-topic", default="labels")
    parser.add_argument("--classes", default="legit,fraud")
    parser.add_argument("--annotator", default="terminal")
    args = parser.parse_args()
    classes = args.classes.split(",")
    consumer = KafkaConsumer(args.requests_topic, bootstrap_servers=args.bootstrap, group_id=f"analyst-{args.annotator}",
                             auto_offset_reset="earliest", session_timeout_ms=10_000)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap)
    for record in consumer:
        request = orjson.loads(record.value)
        if request["expires_at"] < time.time():
            continue
        print(f"\n{request['request_id']}  ({request['reason']}, model v{request['model_version']})")
        print("  features:", request["features"])
        print("  scores:  ", {k: round(v, 3) for k, v in request["scores"].items()})
        choice = input("  " + "  ".join(f"[{i}] {c}" for i, c in enumerate(classes)) + "  [s]kip [q]uit > ").strip()
        if choice == "q":
            break
        if choice.isdigit() and int(choice) < len(classes):
            label = {"request_id": request["request_id"], "label": classes[int(choice)], "annotator": args.annotator,
                     "labeled_at": time.time()}
            producer.send(args.labels_topic, orjson.dumps(label), key=request["request_id"].encode())
            producer.flush()
    consumer.close()


if __name__ == "__main__":
    main()
