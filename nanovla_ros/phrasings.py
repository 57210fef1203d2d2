"""A bank of ways to say each workcell task, split by *family*, and requests that are out of scope (no ROS, no
simulator).

A family is one generator rule: a core phrase for the task ("put the {c} in the {t}") in one style ("could you
...?", "... please", a terse form, a reordered clause, an adverb). Every sentence of a family fills its slots with a
task's colours and with nouns for the objects ("cube", "block", "brick", ...) and the targets ("square", "tile",
"patch", ...). Some cores, some styles and some nouns are held out: a family is held out when its core or its style
is, and held-out families may use held-out nouns; training families never do. So a held-out family's sentences
are made by a rule that training data, router trials and checkpoint selection never see.

The workcell's original templates (``nanovla_ros.tasks.TEMPLATES``) are kept beside the bank for comparison with
earlier results.

Out-of-scope requests (things the policy was never trained to do, or objects the workcell does not have) come in two
sets written apart: ``OUT_OF_SCOPE_CALIBRATION`` may be used to fit the refusal, ``OUT_OF_SCOPE_HELDOUT`` only to
measure it.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
from dataclasses import dataclass

import numpy as np

from nanovla_ros.tasks import CUBES, HELDOUT_PAIRS, KINDS, SQUARES, Task

# --- nouns: (training, held out)
CUBE_NOUNS = (("cube", "block", "box"), ("brick", "piece"))
SQUARE_NOUNS = (("square", "tile", "patch", "zone"), ("mat", "pad", "spot"))
DIRECTION_PHRASES = {
    "left": (("to the left", "left", "towards the left"), ("leftwards", "over to the left side")),
    "right": (("to the right", "right", "towards the right"), ("rightwards", "over to the right side")),
    "forward": (("away from the robot", "forward", "away from the arm"), ("further away", "out away from you")),
}

# --- core phrases per task: {c} the cube ("red block"), {t} the target ("yellow tile", "blue brick"), {d} a
# direction. (training, held out)
CORES = {
    "pick_place": ((
        "put the {c} in the {t}", "place the {c} on the {t}", "move the {c} into the {t}",
        "pick up the {c} and put it in the {t}", "bring the {c} to the {t}", "carry the {c} over to the {t}",
        "set the {c} down in the {t}", "get the {c} onto the {t}", "take the {c} to the {t}",
        "grab the {c} and drop it on the {t}",
    ), (
        "transfer the {c} to the {t}", "relocate the {c} onto the {t}", "the {c} goes in the {t}",
    )),
    "push": ((
        "push the {c} {d}", "slide the {c} {d}", "nudge the {c} {d}", "give the {c} a push {d}",
        "move the {c} {d} by pushing it", "shift the {c} {d}", "shove the {c} {d}", "push the {c} a bit {d}",
        "slide the {c} along the table {d}", "sweep the {c} {d}",
    ), (
        "scoot the {c} {d}", "bump the {c} {d}", "the {c} needs to go {d}, push it",
    )),
    "touch": ((
        "touch the {c}", "tap the {c}", "poke the {c}", "make contact with the {c}", "put the gripper on the {c}",
        "reach out and touch the {c}", "press on the {c}", "go and touch the {c}", "point at the {c} and touch it",
        "lay the gripper on the {c}",
    ), (
        "give the {c} a tap", "boop the {c}", "the {c}, touch it",
    )),
    "stack": ((
        "stack the {c} on the {t}", "put the {c} on top of the {t}", "place the {c} onto the {t}",
        "set the {c} on top of the {t}", "pile the {c} onto the {t}", "lift the {c} and put it on the {t}",
        "build a stack with the {c} on the {t}", "put the {c} up on the {t}", "balance the {c} on the {t}",
        "place the {c} so it sits on the {t}",
    ), (
        "build a tower with the {c} on the {t}", "the {c} goes on top of the {t}", "cap the {t} with the {c}",
    )),
}
# --- styles: how the core is said; {x} the core phrase. (training, held out)
STYLES = ((
    "{x}", "please {x}", "{x}, please", "could you {x}?", "can you {x}", "I'd like you to {x}", "{x} now",
    "{x} carefully", "now {x}", "go ahead and {x}", "I need you to {x}", "{x}, thanks",
), (
    "hey robot, {x}", "{x} for me", "if you could, {x}",
))
# Terse forms replace the core and the style: a family each. (training, held out)
TERSE = {
    "pick_place": (("{c} to the {t}", "{c} into {t}"), ("{c} -> {t}",)),
    "push": (("{c} {d}",), ("{d} with the {c}",)),
    "touch": (("{c}, touch",), ("touch: {c}",)),
    "stack": (("{c} on {t}",), ("{c} atop the {t}",)),
}


@dataclass(frozen=True)
class Family:
    """One generator rule of the bank. ``id`` is stable (it names the core and the style)."""

    id: str
    kind: str
    pattern: str  # the core inside its style: slots {c}, {t}, {d}
    split: str  # "train" or "heldout"
    core: str = ""  # the core phrase (a terse form: its pattern); families of one core differ only in style


def _id(kind: str, pattern: str) -> str:
    return f"{kind}/{hashlib.sha1(pattern.encode()).hexdigest()[:8]}"


def families(kind: str | None = None) -> list[Family]:
    """Every family of ``kind`` (or of all kinds), training ones first."""
    kinds = [kind] if kind else list(KINDS)
    found = []
    for k in kinds:
        train_cores, held_cores = CORES[k]
        for core, style in itertools.product(train_cores + held_cores, STYLES[0] + STYLES[1]):
            held = core in held_cores or style in STYLES[1]
            pattern = style.format(x=core)
            found.append(Family(_id(k, pattern), k, pattern, "heldout" if held else "train", core))
        for split, group in zip(("train", "heldout"), TERSE[k], strict=True):
            for pattern in group:
                found.append(Family(_id(k, pattern), k, pattern, split, pattern))
    return sorted(found, key=lambda f: (f.kind, f.split != "train", f.id))


def _nouns(split: str, pair: tuple[tuple[str, ...], tuple[str, ...]]) -> tuple[str, ...]:
    return pair[0] if split == "train" else pair[0] + pair[1]


def say(family: Family, task: Task, rng: np.random.Generator) -> str:
    """A sentence of ``family`` for ``task`` (its kind, cube and target), nouns drawn with ``rng``."""
    if family.kind != task.kind:
        raise ValueError(f"family {family.id} says {family.kind!r}, the task is {task.kind!r}")
    cube_noun = rng.choice(_nouns(family.split, CUBE_NOUNS))
    slots = {"c": f"{task.cube} {cube_noun}"}
    if task.kind == "pick_place":
        slots["t"] = f"{task.target} {rng.choice(_nouns(family.split, SQUARE_NOUNS))}"
    elif task.kind == "stack":
        slots["t"] = f"{task.target} {rng.choice(_nouns(family.split, CUBE_NOUNS))}"
    elif task.kind == "push":
        slots["d"] = str(rng.choice(_nouns(family.split, DIRECTION_PHRASES[task.target])))
    return family.pattern.format(**{k: slots.get(k, "") for k in ("c", "t", "d")})


def task_grid(kind: str, split: str) -> list[tuple[str, str]]:
    """(cube, target) pairs of ``kind`` in the workcell's colour split (held-out colour pairings of
    pick-and-place stay held out)."""
    if kind == "pick_place":
        return [(c, s) for c in CUBES for s in SQUARES if ((c, s) in HELDOUT_PAIRS) == (split == "heldout")]
    if kind == "push":
        return [(c, d) for c in CUBES for d in DIRECTION_PHRASES]
    if kind == "stack":
        return [(c, o) for c in CUBES for o in CUBES if o != c]
    return [(c, "") for c in CUBES]


def bank(split: str, per_family: int = 2, seed: int = 0) -> list[tuple[str, str, str, str, str]]:
    """(text, kind, cube, target, family id) of ``per_family`` sentences per family and task of ``split``,
    deterministic given ``seed``, sorted by text. "train": training families on training colour pairings;
    "heldout": held-out families (on every pairing)."""
    rows = set()
    for family in families():
        if family.split != split:
            continue
        pairs = task_grid(family.kind, "train") + (task_grid(family.kind, "heldout")
                                                   if split == "heldout" and family.kind == "pick_place" else [])
        for cube, target in pairs:
            rng = np.random.default_rng([seed, int(family.id.split("/")[1], 16), CUBES.index(cube)])
            for _ in range(per_family):
                text = say(family, Task(family.kind, cube, target, "", split), rng)
                rows.add((" ".join(text.split()), family.kind, cube, target, family.id))
    return sorted(rows)


@functools.lru_cache(maxsize=4)
def _bank_by_task(split: str) -> dict[tuple[str, str, str], list[str]]:
    by_task: dict[tuple[str, str, str], list[str]] = {}
    for text, kind, cube, target, _ in bank(split):
        by_task.setdefault((kind, cube, target), []).append(text)
    return by_task


def sentences_of(kind: str, cube: str, target: str, split: str = "train") -> list[str]:
    """The bank's sentences (``bank(split)``) that say this task; [] for a task the bank has none of."""
    return list(_bank_by_task(split).get((kind, cube, target), []))


def all_sentences() -> list[str]:
    """Every sentence of the bank, both splits, sorted (for embedding tables)."""
    return sorted({row[0] for split in ("train", "heldout") for row in bank(split)})


def sample_phrasing(task: Task, rng: np.random.Generator, split: str = "train") -> str:
    """``task`` said by one of the bank's sentences of ``split`` (so an embedding table of the bank covers it)."""
    options = sentences_of(task.kind, task.cube, task.target, split)
    if not options:
        raise ValueError(f"the phrasing bank has no {split} sentence for {task.kind} {task.cube} {task.target}")
    return options[rng.integers(0, len(options))]


# Requests the policy was never trained for, or for objects the workcell does not have. Calibration set: may be
# used to fit the refusal. Held-out set: written apart, with other verbs, objects and styles; only for measuring.
OUT_OF_SCOPE_CALIBRATION = (
    "make me a coffee", "open the door", "wave hello", "put the red cube in the fridge", "close the window",
    "turn on the lights", "pour a glass of water", "fold the towel", "pick up the cup", "throw the ball",
    "clean the table", "write your name", "dance for me", "bring me a sandwich", "put the blue cube in the drawer",
    "open the drawer", "what time is it", "tell me a joke", "push the chair to the left", "touch the screen",
    "stack the plates", "put the green block in my hand", "grab the phone", "sort the laundry", "water the plants",
    "move the laptop into the bag", "put the red cube in the sink", "hand me the scissors", "unplug the charger",
    "shake my hand", "draw a circle", "pick up the pen and write", "put the cup on the shelf", "feed the cat",
    "play some music", "turn off the robot", "cut the paper", "hammer the nail", "pick up the yellow square",
    "stack the yellow square on the white square", "put the purple square in the red cube", "fetch my keys",
    "push the door open", "touch the ceiling", "tidy up the room", "open the box of tools", "lift the table",
    "hello", "how are you", "do nothing", "stop", "go to sleep", "count to ten", "spin around",
)
OUT_OF_SCOPE_HELDOUT = (
    "could you make some tea", "please open the window for me", "say goodbye", "put the green cube in the oven",
    "place the blue block in the dishwasher", "light a candle", "iron my shirt", "juggle the cubes",
    "peel an orange", "knock on the door", "set the table for dinner", "vacuum the floor",
    "move the red brick into the microwave", "bring me the remote", "type an email", "paint the wall",
    "stack the cups on the saucer", "sing a song", "pick up the spoon", "slide the book to the left",
    "tap the keyboard", "wrap the present", "take out the trash", "zip my jacket", "screw in the light bulb",
    "put the red block in your mouth", "throw the green cube at the wall", "catch the ball", "fill the kettle",
    "what is the weather like", "good morning robot", "turn the page", "lock the door", "feed the dog",
    "pour the cereal", "tie my shoes", "put on some music", "unscrew the lid", "swat the fly", "bake a cake",
)
