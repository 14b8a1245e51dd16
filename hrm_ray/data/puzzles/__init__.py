"""Puzzle datasets of the HRM paper (Sudoku, ARC, Maze): format, builders, group-based sampling."""
