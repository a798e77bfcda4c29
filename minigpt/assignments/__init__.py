"""Classroom assignments from the solution notebooks: student versions and autograding.

    python -m minigpt.assignments release notebooks/02_attention.ipynb --out release/
    python -m minigpt.assignments release --all --out release/
    python -m minigpt.assignments grade submissions/*.ipynb --csv grades.csv

The solution notebooks in ``notebooks/`` are the one source of truth: nbgrader's markers
(``### BEGIN SOLUTION`` … ``### END SOLUTION``, ``### BEGIN HIDDEN TESTS`` … ``### END HIDDEN
TESTS``) inside exercise cells that start with ``# Exercise NN.M: title``. See
``notebooks/README.md`` (the instructor guide).
"""

from .grade import ExerciseResult, GradeReport, grade
from .gradefile import append_row, write_rows
from .markers import AssignmentError, Exercise, find_exercises
from .release import release, student_notebook

__all__ = ["AssignmentError", "append_row", "Exercise", "ExerciseResult", "GradeReport", "find_exercises", "grade",
           "release", "student_notebook", "write_rows"]
