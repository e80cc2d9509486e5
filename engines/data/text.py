"""Sentences for the corpus: the GRID grammar, and open-vocabulary everyday English.

GRID (Cooke et al. 2006): command colour preposition letter digit adverb, 51 words in six slots
(../shared/README.md). `grid_sentence(rng)` draws each slot uniformly.

Open vocabulary: `open_sentences()` is a fixed list of OPEN_COUNT everyday sentences (requests,
questions, statements; 4 to 12 words) that this module makes from its own templates and word lists:
each template's slots are filled by a seeded generator and duplicates are dropped, so the list is
the same on every machine. Words are plain (US) spellings that espeak-ng reads correctly and whisper
writes the same way (no digits, abbreviations or symbols).
"""

from __future__ import annotations

import functools
import itertools
import random
import re

import numpy as np

from engines import grid

# The words of each GRID slot, in the grammar's order (engines.grid holds the grammar once).
GRID_SLOTS: tuple[tuple[str, ...], ...] = tuple(tuple(slot.values()) for slot in grid.GRID_SLOTS)
GRID_WORDS: tuple[str, ...] = tuple(w for slot in GRID_SLOTS for w in slot)

OPEN_COUNT = 600
OPEN_SEED = 20240605
MIN_WORDS, MAX_WORDS = 4, 12


# The GRID letter "a" is its name /eI/, but espeak-ng reads a lone "a" as the article /@/: the
# synthesizers get it as explicit phonemes (espeak-ng mnemonics for mbrola, IPA for piper).
LETTER_A = {"espeak": "[['eI]]", "ipa": "[[ˈeɪ]]"}


def grid_sentence(rng: np.random.Generator) -> str:
    """A random GRID sentence, e.g. "bin blue at f two now"."""
    return " ".join(slot[int(rng.integers(len(slot)))] for slot in GRID_SLOTS)


def is_grid(sentence: str) -> bool:
    """Whether `sentence` is one of the GRID grammar's (lower case, single spaces)."""
    words = sentence.split()
    return len(words) == len(GRID_SLOTS) and all(w in slot for w, slot in zip(words, GRID_SLOTS, strict=True))


def speakable(sentence: str, alphabet: str) -> str:
    """The text a synthesizer reads for `sentence`: GRID's letter "a" spelt out in `alphabet` (LETTER_A)."""
    if not is_grid(sentence):
        return sentence
    words = sentence.split()
    if words[3] == "a":
        words[3] = LETTER_A[alphabet]
    return " ".join(words)


# Word lists. Objects are things found at home or work; each entry reads naturally after "the".
OBJECTS = ("cup", "kettle", "blanket", "umbrella", "laptop", "notebook", "garden hose", "lamp", "key",
           "remote control", "phone charger", "bread knife", "shopping bag", "winter coat", "map",
           "basket", "frying pan", "pillow", "wallet", "camera", "ladder", "towel", "letter", "bicycle",
           "toolbox", "teapot", "backpack", "mirror", "calendar", "water bottle")
PLACES_ON = ("on the kitchen table", "in the top drawer", "next to the door", "under the bed",
             "on the shelf", "in the garage", "by the window", "on my desk", "in the hallway",
             "behind the sofa", "in the car", "near the sink")
PLACES = ("library", "bakery", "station", "museum", "post office", "swimming pool", "market", "cinema",
          "hospital", "park", "pharmacy", "bank", "school", "gym", "restaurant", "hotel")
FUTURE_TIMES = ("tonight", "tomorrow", "next week", "on Monday", "on Friday", "after lunch",
                "before dinner", "at the weekend", "later today", "in the evening")
PAST_TIMES = ("yesterday", "last night", "last week", "on Sunday", "this morning", "two days ago",
              "last summer", "a month ago")
NAMES = ("Anna", "David", "Maria", "Peter", "Sarah", "James", "Emma", "Robert", "Lucy", "Thomas",
         "Helen", "Michael", "Laura", "Daniel", "Grace", "Oliver")
RELATIVES = ("my sister", "my brother", "our neighbor", "my friend", "her father", "his mother",
             "the teacher", "my uncle", "our manager", "the driver")
ADJECTIVES = ("new", "old", "small", "heavy", "bright", "cheap", "quiet", "warm", "clean", "strange",
              "lovely", "simple", "useful", "broken")
WEATHER = ("rain", "snow", "be sunny", "be windy", "get colder", "be foggy", "clear up", "be very hot")
ACTIVITIES = ("play tennis", "go swimming", "read the paper", "cook dinner", "walk the dog",
              "visit friends", "paint pictures", "ride a bike", "watch old films", "work in the garden",
              "bake bread", "go fishing", "play the piano", "learn new songs")
DAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")
REQUEST_VERBS = ("bring", "find", "move", "clean", "check", "hold", "fetch", "carry", "wash", "open")
CHORES = ("close the window", "turn off the lights", "lock the back door", "feed the cat",
          "water the plants", "call your mother", "take out the rubbish", "charge your phone",
          "buy some milk", "pay the bill", "switch off the oven", "pack an umbrella")
FOODS = ("soup", "pasta", "rice", "salad", "cheese", "apples", "coffee", "orange juice", "fresh fish",
         "chicken", "chocolate cake", "tomatoes", "green tea", "potatoes")
FEELINGS = ("tired", "happy", "hungry", "nervous", "cold", "busy", "excited", "worried", "bored")
REASONS = ("after the long walk", "because of the noise", "about the meeting", "before the exam",
           "since the trip", "about the weather", "after such a long day")
NUMBERS = ("five", "ten", "fifteen", "twenty", "thirty", "forty")
TRANSPORT = ("bus", "train", "ferry", "tram", "coach", "plane")
TOWNS = ("the city", "the airport", "the coast", "the old town", "the university", "the harbor")
HELPS = ("the dishes", "the shopping", "my homework", "the heavy boxes", "the garden", "the cooking",
         "the washing", "the move")
DEVICES = ("radio", "television", "music", "heating", "volume", "fan", "lights")
MASS_FOODS = ("soup", "pasta", "rice", "salad", "cheese", "coffee", "orange juice", "milk", "bread",
              "chicken", "chocolate cake", "green tea")
DISHES = ("soup", "pasta", "a salad", "pancakes", "a chocolate cake", "fresh bread", "a curry",
          "an apple pie", "lemonade", "vegetable stew")
LEAVING = ("leave", "go to bed", "go out", "lock up", "go to work")

TEMPLATES: tuple[tuple[str, dict[str, tuple[str, ...]]], ...] = (
    ("Could you {verb} the {object} for me?", {"verb": REQUEST_VERBS, "object": OBJECTS}),
    ("Please put the {object} {place_on}.", {"object": OBJECTS, "place_on": PLACES_ON}),
    ("Have you seen my {object} anywhere?", {"object": OBJECTS}),
    ("I think I left the {object} {place_on}.", {"object": OBJECTS, "place_on": PLACES_ON}),
    ("Where is the nearest {place}?", {"place": PLACES}),
    ("What time does the {place} open {time}?", {"place": PLACES, "time": FUTURE_TIMES}),
    ("We are going to the {place} {time}.", {"place": PLACES, "time": FUTURE_TIMES}),
    ("{name} went to the {place} {past}.", {"name": NAMES, "place": PLACES, "past": PAST_TIMES}),
    ("{relative} bought a {adjective} {object} {past}.",
     {"relative": RELATIVES, "adjective": ADJECTIVES, "object": OBJECTS, "past": PAST_TIMES}),
    ("Do you think it will {weather} {time}?", {"weather": WEATHER, "time": FUTURE_TIMES}),
    ("They say it is going to {weather} {time}.", {"weather": WEATHER, "time": FUTURE_TIMES}),
    ("{name} likes to {activity} on {days}.", {"name": NAMES, "activity": ACTIVITIES, "days": DAYS}),
    ("Would you like to {activity} with us {time}?", {"activity": ACTIVITIES, "time": FUTURE_TIMES}),
    ("Don't forget to {chore} before you {leave}.", {"chore": CHORES, "leave": LEAVING}),
    ("Can you remind me to {chore} {time}?", {"chore": CHORES, "time": FUTURE_TIMES}),
    ("I would like some {food} and a glass of water.", {"food": FOODS}),
    ("Is there any {food} left in the {store}?", {"food": MASS_FOODS, "store": ("fridge", "kitchen", "pot",
                                                                               "cupboard")}),
    ("{relative} made {dish} for everyone {past}.",
     {"relative": RELATIVES, "dish": DISHES, "past": PAST_TIMES}),
    ("I feel a bit {feeling} {reason}.", {"feeling": FEELINGS, "reason": REASONS}),
    ("Why are you so {feeling} {today}?", {"feeling": FEELINGS, "today": ("today", "this morning",
                                                                          "tonight", "all of a sudden")}),
    ("The next {transport} to {town} leaves in {number} minutes.",
     {"transport": TRANSPORT, "town": TOWNS, "number": NUMBERS}),
    ("How long does the {transport} to {town} take?", {"transport": TRANSPORT, "town": TOWNS}),
    ("Thank you for helping me with {help}.", {"help": HELPS}),
    ("Could you help me with {help} {time}?", {"help": HELPS, "time": FUTURE_TIMES}),
    ("Who left this {adjective} {object} {place_on}?",
     {"adjective": ADJECTIVES, "object": OBJECTS, "place_on": PLACES_ON}),
    ("Please turn the {device} {direction} a little.", {"device": DEVICES, "direction": ("up", "down")}),
    ("{name} will call you back in {number} minutes.", {"name": NAMES, "number": NUMBERS}),
    ("Let's meet outside the {place} {time}.", {"place": PLACES, "time": FUTURE_TIMES}),
)


def word_count(sentence: str) -> int:
    return len(re.findall(r"[A-Za-z']+", sentence))


def _fillings(template: str, slots: dict[str, tuple[str, ...]], rng: random.Random) -> list[str]:
    """Every filling of `template` that has MIN_WORDS to MAX_WORDS words, in a seeded random order."""
    keys = list(slots)
    texts = [template.format(**dict(zip(keys, words, strict=True)))
             for words in itertools.product(*(slots[k] for k in keys))]
    texts = [t[0].upper() + t[1:] for t in texts if MIN_WORDS <= word_count(t) <= MAX_WORDS]
    rng.shuffle(texts)
    return texts


@functools.lru_cache(maxsize=1)
def _open_sentences() -> tuple[str, ...]:
    rng = random.Random(OPEN_SEED)
    queues = [_fillings(template, slots, rng) for template, slots in TEMPLATES]
    # round robin over the templates, so that every prefix of the list is varied and small templates
    # (few fillings) simply drop out
    chosen: list[str] = []
    for row in itertools.zip_longest(*queues):
        chosen.extend(text for text in row if text is not None)
        if len(chosen) >= OPEN_COUNT:
            break
    return tuple(chosen[:OPEN_COUNT])


def open_sentences() -> list[str]:
    """OPEN_COUNT fixed everyday sentences, in a fixed order (see the module docstring)."""
    return list(_open_sentences())
