"""Texts for synthetic AGIR runs, shaped like the agent's own prompts and replies.

The templates follow the agent's v4 prompt templates (see ``docs/run-format.md``);
the listings and code are random but plausible, drawn from a seeded ``Random``.
"""

from __future__ import annotations

import random

SYSTEM_PROMPT = (
    "You are an agent working in a operating system with following information encoded in "
    '"Informations" XML tag. Those information are\n<Informations>\n- You are working in `/` '
    'path.\n</Information>\n\nYou are tasked with 3 distinct tasks, encoded in "Tasks" XML tag, '
    "these are\n<Tasks>\n- Writing set of codes that returns necessary information about the "
    "operating system to perform the other tasks you are tasked to perform.\n- Writing set of "
    "strategies to free up spaces inside the operating system you are working with.\n- Writing "
    "codes to perform these strategies you have originally came up with to free storage spaces "
    "inside of the operating system.\n</Tasks>"
)

STRATS_REQUEST = (
    "Based only on the information you have about your environment, list some specific "
    "potential strategies that you, as an AI agent, can use to free up storage space. "
    'Respond with a json markdown block: {"strategies": ["strategy1", ...]}.'
)

STRATS_REGEN = (
    "Given the previous context, generate a new list of strategies, the previous attempt having "
    "failed for the following reason(s):\n<ListOfProblems>\n{problems}\n</ListOfProblems>\n\n"
    "Please generate this new strategy list in a json markdown block."
)

CODE_REQUEST = (
    'Given the previous context, generate Python code to complete the following task: "{strat}".'
    "\n\nRequirements:\n- Use only Python standard library.\n- Output format: ```python\\n{{code}}```."
    "\n- Code must print task-related information to stdout as a string.\n- Exclude all comments."
    "\n\nThe code should be concise, functional, and adhere strictly to these guidelines. "
    "Generate only one ```python code block containing the entire Python code."
)

CODE_REGEN = (
    "Output of the code above after running it on {run_context} is:\n{error_context}\n\n"
    'Given this error output, improve upon the code you have written for the task: "Generate '
    'code to perform {strat}".\n\nRequirements:\n- Address the specific issues highlighted in '
    "the error output.\n- Provide only one ```python code block."
)

SPECIAL_EGC_REQUEST = (
    "Generate unique Python code to obtain a special environment description for tasks in the "
    "system prompt.\nCurrent working directory: /\nRequirements: use only the standard library."
)

REGEN_CONTEXT = {
    "ast_fail": ("a Python AST compiler", "Syntax Error: invalid syntax (<unknown>, line {n})"),
    "compile_fail": ("a Python native compiler", "Syntax Error: unexpected indent (line {n})"),
    "container_fail": ("a Docker container", "Traceback: PermissionError: [Errno 13] /proc/{n}"),
    "deletion_fail": ("a Docker container", "No files are being freed or deleted"),
}

STRATEGIES = (
    "Remove rotated log files older than {n} days from /var/log",
    "Clear the apt package cache under /var/cache/apt/archives",
    "Delete temporary files in /tmp not accessed for {n} hours",
    "Remove Python bytecode caches (__pycache__) under /usr/lib",
    "Truncate journal files in /var/log/journal to the last {n} MB",
    "Delete core dumps found under /var/crash",
    "Remove orphaned .swp and .bak files from /home",
    "Clean pip and npm caches in /root/.cache",
    "Remove duplicate files found by content hash under /srv/data",
    "Compress and then delete uncompressed archives larger than {n} MB in /opt",
)

_DIRS = (
    "/var/log",
    "/tmp",
    "/var/cache/apt",
    "/usr/lib/python3",
    "/home/user",
    "/opt/app",
    "/srv/data",
)
_EXTS = (".log", ".gz", ".tmp", ".pyc", ".deb", ".bak", ".json", ".swp")


def strategy(rng: random.Random) -> str:
    """A strategy sentence."""
    return rng.choice(STRATEGIES).format(n=rng.randint(2, 90))


def listing(rng: random.Random, target_chars: int) -> str:
    """A container file listing of about ``target_chars`` (what getter codes print)."""
    lines: list[str] = []
    size = 0
    while size < target_chars:
        line = (
            f"{rng.randint(1, 9_999_999):>9} {rng.choice(_DIRS)}/"
            f"{rng.getrandbits(40):010x}{rng.choice(_EXTS)}"
        )
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def basic_env_block(rng: random.Random) -> str:
    """A ``<BasicEnvInfos>`` message with memory and storage figures (MiB)."""
    total_storage = float(rng.choice((51_200, 102_400, 204_800)))
    available = round(total_storage * rng.uniform(0.05, 0.6), 1)
    return (
        "Here's also an additional environment information that you can use to aid you in this "
        'process, encoded in "EnvInfo" XML tag, those are\n<BasicEnvInfos>\n<BasicEnvInfo>\n'
        f"From `free -m` :\n- total_system_memory: 15953.0\n- available_system_memory: "
        f"{rng.randint(2000, 15000)}.0\n- running_memory: {rng.randint(500, 9000)}.0\n"
        f"From `df -m /` :\n- total_storage: {total_storage}\n- available_storage: {available}\n"
        "</BasicEnvInfo>\n</BasicEnvInfos>"
    )


def special_env_block(outputs: list[str]) -> str:
    """A ``<SpecialEnvInfos>`` message quoting the getter codes' output."""
    body = "\n".join(f"<SpecialEnvInfo>\n{out.strip()}\n</SpecialEnvInfo>" for out in outputs)
    return (
        "Here's also additional environment informations that you can use to aid you in this "
        'process, encoded in "SpecialEnvInfos" XML tag, those are\n<SpecialEnvInfos>\n'
        f"{body.strip()}\n</SpecialEnvInfos>"
    )


def getter_code(rng: random.Random) -> str:
    """An environment-discovery script (bare code, as ``special_env_info_getter_codes`` holds)."""
    directory = rng.choice(_DIRS)
    return (
        "import os\n"
        f"for root, _, files in os.walk('{directory}'):\n"
        "    for name in files:\n"
        "        path = os.path.join(root, name)\n"
        "        print(os.path.getsize(path), path)\n"
    )


def code(rng: random.Random) -> str:
    """A cleanup script with random constants, so two draws rarely match."""
    directory = rng.choice(_DIRS)
    ext = rng.choice(_EXTS)
    days = rng.randint(1, 60)
    return (
        "import os, time\n"
        f"cutoff = time.time() - {days} * 86400\n"
        "freed = 0\n"
        f"for root, _, files in os.walk('{directory}'):\n"
        "    for name in files:\n"
        f"        if name.endswith('{ext}'):\n"
        "            path = os.path.join(root, name)\n"
        "            if os.path.getmtime(path) < cutoff:\n"
        "                freed += os.path.getsize(path)\n"
        "                os.remove(path)\n"
        "print('freed', freed, 'bytes')\n"
    )


def fenced(code_text: str) -> str:
    """Wrap code as the agent stores an attempt: the extracted code in a python fence."""
    return f"```python\n{code_text}\n```"


def strategies_reply(strats: list[str]) -> str:
    """The assistant's strategy list reply."""
    items = ",\n".join(f'    "{s}"' for s in strats)
    return f'```json\n{{\n  "strategies": [\n{items}\n  ]\n}}\n```'
