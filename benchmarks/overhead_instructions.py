"""Instructions per training step that each loop adds to a plain PyTorch loop, counted by
Valgrind's callgrind: a deterministic figure where timings on a shared machine are not.

Each loop runs in its own process under `valgrind --tool=callgrind --instr-atstart=no`; counting
is switched on after step FIRST and off after step LAST (`callgrind_control`, from the loop's
own record hook), so imports, set-up, the first steps and the end of the run are not counted,
and the count covers LAST - FIRST steps with their records (one every 10 steps). Reported: the
instructions per step of each loop, and what it adds to the plain loop. Loops are those of
`benchmarks/overhead.py` (phasetrain with tracking on, lean, ignite where installed). The model
is the small case's MLP 32-64-10, batch 64, 1 thread, Adam; `--widths 64,256,256,10 --batch 128`
gives the 1.3 ms case. Instructions are not time: cache misses and the width of the machine are
not counted, so compare loops with each other, and one commit with another, not with a clock.
Needs valgrind (`apt install valgrind`); without it the script says so and exits. Results go to
benchmarks/results/overhead_instructions.json.

usage: python benchmarks/overhead_instructions.py [--widths 32,64,10] [--batch 64] [--loops plain,phasetrain,lean]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

RESULTS = Path(__file__).with_name("results") / "overhead_instructions.json"
FIRST, LAST = 50, 250  # counted: the steps after FIRST up to and including LAST
BLOCK = 10


def worker(loop: str, widths: tuple[int, ...], batch: int) -> None:
    """Run `loop` for LAST + 50 steps, counting instructions from step FIRST to step LAST."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    import overhead

    torch.set_num_threads(1)
    batches = overhead.make_batches(widths[0], batch, LAST + 50)

    def count(state: str) -> None:
        subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], capture_output=True, check=False)

    class Switch:  # in place of overhead.py's twin: the case, and a hook called after every BLOCK-th step
        case = overhead.Case(overhead.mlp(*widths), partial(overhead.make_batches, widths[0], batch), 1, None)
        device = torch.device("cpu")

        def hook(self, step: int) -> None:
            if step == FIRST:
                count("on")
            elif step == LAST:
                count("off")

    torch.manual_seed(0)
    model = overhead.mlp(*widths)()
    if loop == "plain":
        optimizer, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss()
        for step, (inputs, targets) in enumerate(batches, start=1):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs), targets).backward()
            optimizer.step()
            if step % BLOCK == 0:
                Switch().hook(step)
    else:
        overhead.LOOPS[loop][0](model, batches, Switch())


def count_instructions(loop: str, widths: tuple[int, ...], batch: int) -> float:
    """Instructions per step of `loop`, counted in a callgrind process."""
    with tempfile.TemporaryDirectory() as folder:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={folder}/callgrind.out", sys.executable, __file__, "--worker", loop,
                   "--widths", ",".join(map(str, widths)), "--batch", str(batch)]
        run = subprocess.run(command, capture_output=True, text=True, check=True)
    collected = re.search(r"Collected : ([\d,]+)", run.stderr)
    if collected is None:
        raise RuntimeError(f"callgrind reported no count for {loop}:\n{run.stderr[-2000:]}")
    return int(collected.group(1).replace(",", "")) / (LAST - FIRST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="32,64,10", help="the MLP's layer widths")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--loops", default="plain,phasetrain,lean,ignite", help="comma-separated; plain first")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args()
    widths = tuple(int(width) for width in args.widths.split(","))
    if args.worker:
        worker(args.worker, widths, args.batch)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt install valgrind); nothing measured")
        return
    loops = [loop for loop in args.loops.split(",") if loop != "ignite" or importlib.util.find_spec("ignite")]
    counts = {loop: count_instructions(loop, widths, args.batch) for loop in loops}
    plain = counts.get("plain")
    print(f"MLP {args.widths}, batch {args.batch}, 1 thread: instructions per step over steps {FIRST + 1}-{LAST}")
    print(f"{'loop':<12} {'per step':>12} {'added':>10} {'added %':>8}")
    rows = []
    for loop, per_step in counts.items():
        added = None if plain is None else per_step - plain
        rows.append({"loop": loop, "instructions_per_step": per_step, "added_per_step": added})
        print(f"{loop:<12} {per_step:>12,.0f} {'' if added is None else f'{added:,.0f}':>10} "
              f"{'' if added is None else f'{100 * added / plain:.1f}':>8}")
    args.json.parent.mkdir(exist_ok=True)
    key = f"MLP {args.widths}, batch {args.batch}"
    previous = json.loads(args.json.read_text()) if args.json.is_file() else {}
    previous[key] = {"steps": [FIRST + 1, LAST], "rows": rows}
    args.json.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
