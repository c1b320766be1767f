"""Which teacher decoder stages supervise which student stage when depths differ.

Uniform grouping as in the paper's Fig. 5: with 6 teacher and 3 student stages, teacher {0,1} -> student 0,
{2,3} -> 1, {4,5} -> 2. A deeper student than teacher repeats teacher stages (each student stage gets the
teacher stage at the same relative depth), so every student stage is supervised.
"""

from __future__ import annotations


def group_stages(num_teacher: int, num_student: int) -> list[list[int]]:
    """For each student stage, the list of teacher stages (0-based) that supervise it."""
    if num_teacher < 1 or num_student < 1:
        raise ValueError(f"stage counts must be positive, got teacher {num_teacher}, student {num_student}")
    if num_teacher >= num_student:
        groups: list[list[int]] = [[] for _ in range(num_student)]
        for t in range(num_teacher):
            groups[t * num_student // num_teacher].append(t)
        return groups
    # ceil((s + 1) * T / S) - 1: the teacher stage at the same relative depth
    return [[-(-(s + 1) * num_teacher // num_student) - 1] for s in range(num_student)]


def assignment_stage(num_teacher: int, num_student: int) -> list[int]:
    """For each student stage, the single teacher stage whose assignment it reuses: the deepest in its group."""
    return [group[-1] for group in group_stages(num_teacher, num_student)]
