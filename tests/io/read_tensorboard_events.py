"""read_tensorboard_events.py: prints, as JSON, what TensorBoard's own reader (EventAccumulator)
finds in an event directory: the file version and every scalar as [step, value, wall_time].
Used by tensorboard_peer_test to check the event files n3rlhf writes by hand."""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator


def main() -> None:
    accumulator = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    scalars = {
        tag: [[event.step, event.value, event.wall_time] for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }
    print(json.dumps({"file_version": accumulator.file_version, "scalars": scalars}))


if __name__ == "__main__":
    main()
