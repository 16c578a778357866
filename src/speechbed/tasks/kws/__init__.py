"""Keyword spotting (Speech Commands, 12 classes): the task ``kws``; see ``KwsTask``."""
