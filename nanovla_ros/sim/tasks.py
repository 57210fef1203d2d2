"""Language-conditioned tasks of the workcell: sampling, instructions with paraphrases, a held-out split
that only evaluation uses, and success checks that a still arm does not pass."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import mujoco
import numpy as np

from nanovla_ros.sim.workcell import (
    CUBE_COLOURS,
    CUBE_HALF_M,
    SQUARE_COLOURS,
    SQUARE_HALF_M,
    TABLE_Z,
    WORKSPACE,
    Workcell,
)
from nanovla_ros.tasks import (  # noqa: F401 - the task metadata, re-exported for the simulator's users
    DIRECTION_WORDS,
    HELDOUT_PAIRS,
    KINDS,
    PUSH_DISTANCE_M,
    TEMPLATES,
    TRAINING_ONLY_TEMPLATES,
    Task,
    all_instructions,
    instruction_rows,
    say,
)

# Unit vectors on the table of each push direction (nanovla_ros.tasks.DIRECTION_WORDS names them).
DIRECTIONS = {"left": np.array([0.0, 1.0]), "right": np.array([0.0, -1.0]), "forward": np.array([1.0, 0.0])}


@dataclass(frozen=True)
class Layout:
    cubes: dict[str, tuple[float, float]]
    squares: dict[str, tuple[float, float]]


def sample_layout(rng: np.random.Generator) -> Layout:
    """Squares, then cubes, at random: squares do not overlap, no cube starts on a square, cubes apart."""
    min_gap = {("square", "square"): 2 * SQUARE_HALF_M + 0.005, ("cube", "square"): SQUARE_HALF_M + CUBE_HALF_M + 0.012,
               ("square", "cube"): SQUARE_HALF_M + CUBE_HALF_M + 0.012, ("cube", "cube"): 0.05}
    for _ in range(200):
        placed: list[tuple[str, str, np.ndarray]] = []
        for kind, name in [("square", s) for s in SQUARE_COLOURS] + [("cube", c) for c in CUBE_COLOURS]:
            for _ in range(200):
                point = rng.uniform(WORKSPACE[0], WORKSPACE[1])
                if all(np.linalg.norm(point - p) >= min_gap[(kind, k)] for k, _, p in placed):
                    placed.append((kind, name, point))
                    break
            else:
                break
        if len(placed) == len(SQUARE_COLOURS) + len(CUBE_COLOURS):
            cubes = {n: tuple(p) for k, n, p in placed if k == "cube"}
            squares = {n: tuple(p) for k, n, p in placed if k == "square"}
            return Layout(cubes, squares)
    raise RuntimeError("could not place the objects apart; widen the workspace")


def scene_observation(seed: int, cameras: tuple[str, ...] = ("front", "wrist")) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The frames of ``cameras`` and the joint positions (rad) of the scene ``sample_layout`` draws from ``seed``,
    the arm at home: one observation, for benches, probes and tests of what a model reads."""
    workcell = Workcell()
    try:
        layout = sample_layout(np.random.default_rng(seed))
        workcell.place(layout.cubes, layout.squares)
        return {name: workcell.render(name) for name in cameras}, workcell.joint_positions.copy()
    finally:
        workcell.close()


def sample_task(rng: np.random.Generator, kind: str | None = None, split: str = "train") -> Task:
    """A task of ``kind`` (random if None) drawn from ``split`` ('train' or 'heldout')."""
    kind = kind or str(rng.choice(KINDS))
    if kind not in KINDS:
        raise ValueError(f"task kind {kind!r} is not one of {list(KINDS)}")
    if split not in ("train", "heldout"):
        raise ValueError(f"split {split!r} is not 'train' or 'heldout'")
    cube = str(rng.choice(list(CUBE_COLOURS)))
    if kind == "pick_place":
        pairs = sorted(HELDOUT_PAIRS) if split == "heldout" else [
            (c, s) for c in CUBE_COLOURS for s in SQUARE_COLOURS if (c, s) not in HELDOUT_PAIRS]
        cube, target = pairs[rng.integers(0, len(pairs))]
    elif kind == "push":
        target = str(rng.choice(list(DIRECTIONS)))
    elif kind == "stack":
        target = str(rng.choice([c for c in CUBE_COLOURS if c != cube]))
    else:
        target = ""
    train_templates, heldout_templates = TEMPLATES[kind]
    # Held-out episodes use a held-out paraphrase, or (pick_place) a held-out pairing with any paraphrase.
    if split == "train":
        templates = train_templates
    elif kind == "pick_place":
        templates = train_templates + heldout_templates
    else:
        templates = heldout_templates
    return Task(kind, cube, target, say(templates[rng.integers(0, len(templates))], cube, target), split)


def rephrased(task: Task, rng: np.random.Generator) -> Task:
    """A training-split task said with any of its training phrasings, the training-only ones included (held-out
    tasks are returned as they are). ``rng``: a generator of its own, so that a seed's scene does not change."""
    if task.split != "train":
        return task
    templates = TEMPLATES[task.kind][0] + TRAINING_ONLY_TEMPLATES[task.kind]
    return replace(task, instruction=say(templates[rng.integers(0, len(templates))], task.cube, task.target))


def arm_geoms(model: mujoco.MjModel) -> set[int]:
    """The geoms of the arm (everything below its shoulder body): a contact of one of them with a cube is a touch."""
    root = model.body("shoulder").id

    def descends(body: int) -> bool:
        while body > 0:
            if body == root:
                return True
            body = model.body_parentid[body]
        return False

    return {g for g in range(model.ngeom) if descends(model.geom_bodyid[g])}


@dataclass
class SuccessMonitor:
    """Watches an episode step by step (touch needs history) and says whether the task is done."""

    task: Task
    workcell: Workcell
    start: dict[str, np.ndarray] = field(default_factory=dict)
    touched: bool = False

    def __post_init__(self) -> None:
        self.start = {c: self.workcell.cube_position(c) for c in CUBE_COLOURS}
        self._cube_geom = self.workcell.model.geom(f"cube_{self.task.cube}").id
        self._arm_geoms = arm_geoms(self.workcell.model)

    def update(self) -> None:
        """Call after every control step."""
        data = self.workcell.data
        for i in range(data.ncon):
            pair = {int(data.contact[i].geom1), int(data.contact[i].geom2)}
            if self._cube_geom in pair and pair & self._arm_geoms:
                self.touched = True

    def _on_table(self, position: np.ndarray) -> bool:
        return abs(position[2] - (TABLE_Z + CUBE_HALF_M)) < 0.006

    def success(self) -> bool:
        w, t = self.workcell, self.task
        cube = w.cube_position(t.cube)
        if t.kind == "touch":
            return self.touched
        if t.kind == "pick_place":
            square = w.square_position(t.target)
            inside = np.all(np.abs(cube[:2] - square[:2]) < SQUARE_HALF_M)
            return bool(inside and self._on_table(cube))
        if t.kind == "push":
            moved = cube[:2] - self.start[t.cube][:2]
            along = float(moved @ DIRECTIONS[t.target])
            across = float(np.linalg.norm(moved - along * DIRECTIONS[t.target]))
            return bool(along >= PUSH_DISTANCE_M and across < 0.04 and self._on_table(cube))
        base = w.cube_position(t.target)  # stack: cube on top of target, target still on the table
        on_top = np.linalg.norm(cube[:2] - base[:2]) < CUBE_HALF_M and abs(cube[2] - base[2] - 2 * CUBE_HALF_M) < 0.008
        return bool(on_top and self._on_table(base))


def task_positions(task: Task, workcell: Workcell, start: dict[str, np.ndarray]) -> np.ndarray:
    """(4,) metres: the x, y of the cube the instruction names and of where it should go (the square of a
    pick_place, the other cube of a stack, PUSH_DISTANCE_M from the cube's ``start`` along a push's direction,
    the cube itself for touch), now. The policy's auxiliary task head learns to read these from the images and
    the instruction (NanoVLAConfig.task_loss_weight)."""
    cube = workcell.cube_position(task.cube)[:2]
    if task.kind == "pick_place":
        goal = workcell.square_position(task.target)[:2]
    elif task.kind == "stack":
        goal = workcell.cube_position(task.target)[:2]
    elif task.kind == "push":
        goal = np.asarray(start[task.cube])[:2] + PUSH_DISTANCE_M * DIRECTIONS[task.target]
    else:
        goal = cube
    return np.concatenate([cube, goal]).astype(np.float32)


def cube_positions(workcell: Workcell) -> np.ndarray:
    """(2 * len(CUBE_COLOURS),) metres: every cube's x, y now, in CUBE_COLOURS order (the task head's colour
    queries: "where is the <colour> cube" for a colour the episode's instruction does not name)."""
    return np.concatenate([workcell.cube_position(c)[:2] for c in CUBE_COLOURS]).astype(np.float32)


def square_positions(workcell: Workcell) -> dict[str, list[float]]:
    """{colour: [x, y]} metres of the target squares (they do not move: one per episode, in its metadata; the task
    head's goal queries ask where another instruction's square is in a scene)."""
    return {c: [round(float(v), 5) for v in workcell.square_position(c)[:2]] for c in SQUARE_COLOURS}
