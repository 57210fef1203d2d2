"""The workcell's tasks as data, shared by everything that needs their meaning without the simulator (no
MuJoCo, no ROS): task kinds, object names, instruction templates and splits, and the instructions they make.
The simulator (``nanovla_ros.sim``) samples scenes and checks success; datasets, training and evaluation read
task meanings from here.
"""
from __future__ import annotations

from dataclasses import dataclass

KINDS = ("pick_place", "push", "touch", "stack")
CUBES = ("red", "green", "blue")  # 3 cm cubes
SQUARES = ("yellow", "white", "purple")  # 7 cm target squares on the table
DIRECTION_WORDS = {"left": "to the left", "right": "to the right", "forward": "away from the robot"}
PUSH_DISTANCE_M = 0.05  # a push succeeds once the cube moved this far in the asked direction

# Instruction templates: the first group trains, the second is held out for evaluation only.
TEMPLATES = {
    "pick_place": (["put the {cube} cube in the {target} square", "place the {cube} cube on the {target} square",
                    "move the {cube} block into the {target} square",
                    "pick up the {cube} cube and put it in the {target} square"],
                   ["drop the {cube} block onto the {target} square", "set the {cube} cube down inside the {target} square"]),
    "push": (["push the {cube} cube {direction}", "slide the {cube} block {direction}",
              "nudge the {cube} cube {direction}"],
             ["shove the {cube} block {direction}"]),
    "touch": (["touch the {cube} cube", "tap the {cube} block", "poke the {cube} cube"],
              ["reach out and touch the {cube} block"]),
    "stack": (["stack the {cube} cube on the {target} cube", "put the {cube} block on top of the {target} block",
               "place the {cube} cube onto the {target} cube"],
              ["build a tower with the {cube} cube on the {target} cube"]),
}
# More ways of saying each task, for demonstrations only (`nanovla collect --in-process --more-phrasings`): never
# evaluated and never held out (the held-out paraphrases above stay unseen).
TRAINING_ONLY_TEMPLATES = {
    "pick_place": ["bring the {cube} cube to the {target} square",
                   "carry the {cube} block over to the {target} square"],
    "push": ["give the {cube} cube a push {direction}", "move the {cube} block {direction} by pushing it"],
    "touch": ["make contact with the {cube} cube", "put the gripper on the {cube} block"],
    "stack": ["set the {cube} cube on top of the {target} cube", "pile the {cube} block onto the {target} block",
              "lift the {cube} cube and put it on the {target} cube"],
}
# Colour-square pairings never seen in training.
HELDOUT_PAIRS = {("red", "purple"), ("green", "yellow"), ("blue", "white")}


@dataclass(frozen=True)
class Task:
    kind: str
    cube: str
    target: str  # square colour (pick_place), direction (push), other cube (stack), "" (touch)
    instruction: str
    split: str  # "train" or "heldout"


def say(template: str, cube: str, target: str) -> str:
    """A template said for one cube and target."""
    return template.format(cube=cube, target=target, direction=DIRECTION_WORDS.get(target, ""))


def targets_of(kind: str, cube: str) -> list[str]:
    """What a task of ``kind`` on ``cube`` can be aimed at."""
    return {"pick_place": list(SQUARES), "push": list(DIRECTION_WORDS), "touch": [""],
            "stack": [c for c in CUBES if c != cube]}[kind]


def instruction_rows() -> list[tuple[str, str, str]]:
    """(text, kind, split) of every instruction the workcell can give, sorted: "train" for the training phrasings
    (the training-only ones included) of training pairings, "heldout" for the held-out paraphrases and
    pick-and-place's held-out colour pairings."""
    rows = set()
    for kind, (train, heldout) in TEMPLATES.items():
        for template in train + heldout + TRAINING_ONLY_TEMPLATES[kind]:
            for cube in CUBES:
                for target in targets_of(kind, cube):
                    held = template in heldout or (kind == "pick_place" and (cube, target) in HELDOUT_PAIRS)
                    rows.add((say(template, cube, target), kind, "heldout" if held else "train"))
    return sorted(rows)


def all_instructions() -> list[str]:
    """Every instruction the workcell can give, both splits and the training-only phrasings, sorted (for
    embedding tables)."""
    return sorted({text for text, _, _ in instruction_rows()})
