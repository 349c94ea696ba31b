"""Conversations: a seeded agenda user simulator, a reader of system text, dialogue metrics (Inform, Success,
Book, Complete) and a batched self-play loop. One job per module:

    goals       goal sources (a corpus dialogue's `goal` field, MultiWOZ and TownInfo alike)
    user        the agenda user: reveal modes full / sharded / agenda, one state object per dialogue
    user_words  how a TownInfo user speaks (the corpus generator speaks through it too)
    reader      system text -> offered venue, informed attributes, booking, no-offer, requested slots
    metrics     per-dialogue Inform / Success / Book / Complete / turns, and their aggregates
    selfplay    the batched loop: every live conversation advances together; systems (oracle, model)
"""
