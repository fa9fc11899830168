#!/usr/bin/env python3
"""The straightforward Python consumer a data team would write instead of haochaping:
confluent-kafka in a consumer group, json.loads per message, pyarrow (vectorised) for the derived
columns, Hive-partitioned zstd Parquet by (dt, city), offsets committed after each write.

    python3 benches/python_consumer.py BROKERS TOPIC GROUP LAKE EXPECTED

It does less than the engine: no validation beyond "is it a JSON object", no dedup, no dead-letter
topic, identity as a plain SHA-256. It stops after EXPECTED messages and prints one JSON line.
"""
import hashlib
import json
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import Consumer

FIELDS = [
    "projectNo", "taskCode", "taskName", "deptCode", "deptName", "areaCode", "pf", "satisfaction",
    "evalDetail", "writingEvaluation", "assessTime", "assessNumber", "userProp", "anonymityFlag",
    "staffId", "staffName",
]
FLUSH_ROWS = 100_000


def text(value):
    return None if value is None else str(value)


def write(columns, lake):
    raw = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    area = raw["areaCode"]
    satisfaction = pc.cast(raw["satisfaction"], pa.int8(), safe=False)
    table = pa.table({
        "project_no": raw["projectNo"],
        "assess_number": pc.cast(raw["assessNumber"], pa.int8(), safe=False),
        "satisfaction": satisfaction,
        "bad_review": pc.less_equal(satisfaction, 2),
        "channel": raw["pf"],
        "area_code": area,
        "province_code": pc.binary_join_element_wise(pc.utf8_slice_codeunits(area, 0, 2), "0000", ""),
        "city_code": pc.binary_join_element_wise(pc.utf8_slice_codeunits(area, 0, 4), "00", ""),
        "county_code": pc.utf8_slice_codeunits(area, 0, 6),
        "township_code": pc.utf8_slice_codeunits(area, 0, 9),
        "dept_code": raw["deptCode"], "dept_name": raw["deptName"],
        "task_code": raw["taskCode"], "task_name": raw["taskName"],
        "staff_id": raw["staffId"], "staff_name": raw["staffName"],
        "tags": pc.split_pattern(raw["evalDetail"], ","),
        "text": raw["writingEvaluation"],
        "assessed_at": pc.strptime(raw["assessTime"], "%Y-%m-%d %H:%M:%S", "s", error_is_null=True),
        "evaluator_kind": raw["userProp"],
        "evaluator_key": pa.array(columns["_identity"], pa.string()),
        "anonymous": pc.equal(raw["anonymityFlag"], "1"),
        "dt": pc.utf8_slice_codeunits(raw["assessTime"], 0, 10),
        "city": pc.binary_join_element_wise(pc.utf8_slice_codeunits(area, 0, 4), "00", ""),
    })
    pq.write_to_dataset(table, lake, partition_cols=["dt", "city"], compression="zstd")


def main():
    brokers, topic, group, lake, expected = sys.argv[1:6]
    expected = int(expected)
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 104857600,
        "max.partition.fetch.bytes": 16777216,
        "fetch.wait.max.ms": 10,
    })
    consumer.subscribe([topic])
    empty = lambda: {name: [] for name in FIELDS + ["_identity"]}  # noqa: E731
    columns, buffered = empty(), 0
    consumed = rejected = written = 0
    first = None
    while consumed < expected:
        for message in consumer.consume(num_messages=10_000, timeout=1.0):
            if message.error():
                continue
            first = first or time.perf_counter()
            consumed += 1
            try:
                event = json.loads(message.value())
            except ValueError:
                rejected += 1
                continue
            if not isinstance(event, dict):
                rejected += 1
                continue
            for name in FIELDS:
                columns[name].append(text(event.get(name)))
            identity = event.get("userCert") or event.get("userPhone") or event.get("userName") or ""
            columns["_identity"].append(hashlib.sha256(str(identity).encode()).hexdigest())
            buffered += 1
        if buffered >= FLUSH_ROWS or (consumed >= expected and buffered):
            write(columns, lake)
            consumer.commit(asynchronous=False)
            written += buffered
            columns, buffered = empty(), 0
    consumer.close()
    seconds = time.perf_counter() - (first or time.perf_counter())
    print(json.dumps({"consumed": consumed, "written": written, "rejected": rejected,
                      "first_message_to_done_s": round(seconds, 3)}))


if __name__ == "__main__":
    main()
