"""Versions of the code whose change makes earlier outputs out of date, by name.

Read by the steps that record them in their lineage (``JobSchema.code_versions``) and by the
pipeline runner, which compares them without importing any ML code. Bump a number when a
change alters what the step writes.
"""

CODE_VERSIONS: dict[str, int] = {
    "features": 3,
    "synthetic_timit": 1,
    "prep_timit": 1,
    "training": 1,
    "evaluation": 1,
    "synthetic_librispeech": 1,
    "asr_prep": 1,
    "tokenizer": 1,
    "synthetic_speech_commands": 1,
    "prep_speech_commands": 1,
    "clip_features": 1,
    "separation_mixtures": 1,
    "separation_cache": 1,
}
