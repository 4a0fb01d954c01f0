"""Runs a training script's main() as one of torchrun's processes and records what this process did,
for tests/test_distributed.py: the seeds of its envs, the games it finished, its weights at the
end, the iteration it stopped at, its pid, and its exit status when main() ends it normally.

    torchrun ... tests/torchrun_driver.py SCRIPT OUT_DIR -- <the script's flags>
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

script, out = sys.argv[1], Path(sys.argv[2])
module = __import__(script)
rank, restart = int(os.environ["RANK"]), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
record = {"rank": rank, "pid": os.getpid(), "seeds": [], "games": []}
out.mkdir(parents=True, exist_ok=True)
(out / f"pid_{rank}_{restart}").write_text(str(os.getpid()))

make_envs, collect_rollout, finish = module.make_envs, module.collect_rollout, module.RunLog.finish


def recording_make_envs(args, backend, seed, num_envs, full_frames=False):
    record["seeds"].append([seed, num_envs, full_frames])
    return make_envs(args, backend, seed, num_envs, full_frames)


pause = os.environ.get("TORCHRUN_DRIVER_PAUSE", "")
pause_at = int(pause.split(":")[1]) if pause and restart == 0 and int(pause.split(":")[0]) == rank else 0
rollouts = 0


def recording_collect_rollout(*args, **kwargs):
    global rollouts
    rollouts += 1
    if rollouts == pause_at:
        (out / "paused.tmp").write_text(str(os.getpid()))
        (out / "paused.tmp").rename(out / f"paused_{rank}_{restart}")  # whole, or not there
        while True:
            time.sleep(1)
    result = collect_rollout(*args, **kwargs)
    record["games"] += result if isinstance(result, list) else result[0]
    (out / f"rolled_out_{rank}_{restart}").touch()  # this process is training
    return result


def recording_finish(self, iteration, global_step):
    record["iteration"], record["global_step"] = iteration, global_step
    torch.save(self.agent.state_dict(), out / f"model_{rank}_{restart}.pt")
    return finish(self, iteration, global_step)


real_exit = os._exit


def recording_exit(code):  # main() leaves a finished torchrun run through os._exit
    record["returned"], record["exit_code"] = True, code
    (out / f"rank_{rank}_{restart}.json").write_text(json.dumps(record))
    real_exit(code)


module.make_envs, module.collect_rollout = recording_make_envs, recording_collect_rollout
module.RunLog.finish = recording_finish
os._exit = recording_exit
sys.argv = [f"{script}.py"] + sys.argv[sys.argv.index("--") + 1 :]
module.main()
recording_exit(1)  # main() returned without leaving: not what a torchrun process should do
