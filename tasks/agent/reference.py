"""The reference agent: a scripted policy that writes correct programs for generated scenarios.

It plays the same loop as a model (same prompts, same sandbox, same run files), so its
runs are a corpus of agent runs to start generation 0 from when the base model is too
weak to succeed on its own (the seed's authors started from their agent's own corpus).
Its programs follow each strategy's ``Rule`` in one of a few styles; to give the corpus
failed attempts to learn from (DPO's pairs), a share of its first attempts carry a
mistake a model makes (a wrong folder, a missing import, a syntax slip) and are fixed on
the next attempt. Everything is drawn from the step's key, so the corpus is reproducible.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from agir_retrain.tasks.environment.families import Rule
from agir_retrain.tasks.environment.generator import generated_for
from agir_retrain.tasks.evaluation.sampling import SampleRequest

MISTAKE_SHARE = 0.3  # of first attempts


def reference_program(rule: Rule, style: int) -> str:
    """A program that deletes exactly what ``rule`` selects, printing each path, in ``style``."""
    tests = []
    if rule.suffixes:
        tests.append(f"name.endswith({rule.suffixes!r})")
    if rule.prefix:
        tests.append(f"name.startswith({rule.prefix!r})")
    if rule.older_than_days is not None:
        tests.append("os.path.getmtime(path) < cutoff")
    condition = " and ".join(tests) or "True"
    header = "import os\n"
    if rule.older_than_days is not None:
        header += f"import time\n\ncutoff = time.time() - {rule.older_than_days:g} * 86400\n"
    if style % 2 == 0:
        return (
            f"{header}freed = 0\n"
            f"for root, dirs, files in os.walk({rule.folder!r}):\n"
            "    for name in files:\n"
            "        path = os.path.join(root, name)\n"
            f"        if {condition}:\n"
            "            freed += os.path.getsize(path)\n"
            "            os.remove(path)\n"
            "            print('deleted', path)\n"
            "print('freed', freed, 'bytes')\n"
        )
    return (
        f"{header}\n\ndef clean(folder):\n"
        "    count = 0\n"
        "    for root, dirs, files in os.walk(folder):\n"
        "        for name in files:\n"
        "            path = os.path.join(root, name)\n"
        f"            if {condition}:\n"
        "                os.remove(path)\n"
        "                print(path)\n"
        "                count += 1\n"
        "    return count\n\n\n"
        f"print('removed', clean({rule.folder!r}), 'files')\n"
    )


def _with_mistake(program: str, rule: Rule, rng: random.Random) -> str:
    kind = rng.choice(("folder", "import", "syntax"))
    if kind == "folder":  # a folder that is not there: nothing is freed
        return program.replace(repr(rule.folder), repr(rule.folder.rstrip("/") + "-old"))
    if kind == "import" and "import time\n" in program:  # NameError when it runs
        return program.replace("import time\n", "")
    return program.replace("for root, dirs, files in", "for root, dirs, files", 1)


def reference_reply(key: str) -> str:
    """The reference agent's reply to the step ``key`` (``<task>#<run>/code/<s>/<attempt>``)."""
    task, _, step = key.partition("#")
    parts = step.split("/")
    generated = generated_for(task)
    if len(parts) != 4 or parts[1] != "code" or generated is None:
        raise ValueError(f"the reference agent codes given strategies of gen-<seed> tasks: {key}")
    strategy, attempt = int(parts[2]), int(parts[3])
    rule = generated.rules[strategy]
    rng = random.Random(hashlib.blake2b(key.rsplit("/", 1)[0].encode()).digest())
    program = reference_program(rule, style=rng.randrange(2))
    if attempt == 1 and rng.random() < MISTAKE_SHARE:
        program = _with_mistake(program, rule, rng)
    return f"```python\n{program}```"


def reference_policy(requests: Sequence[SampleRequest]) -> dict[str, str]:
    """Replies of the reference agent to a wave's requests (a ``collect`` sample function)."""
    return {r.task_id: reference_reply(r.task_id) for r in requests}
