"""The follow-up half of a trial: disease activity after infusion, response endpoints, immune recovery, safety.

Built on the same pipeline mechanism as selection (`immunostrat.pipeline.engine`); its pure derivations live here.
"""
