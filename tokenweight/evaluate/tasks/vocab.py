"""Words and random values for the synthetic tasks (no downloads, no extra dependency).

RULER draws keys and word lists from the ``wonderwords`` package (about 1 500 nouns, 1 000
adjectives, 900 verbs). We embed smaller lists of common English words instead (a few hundred of
each: 80 000 ``adjective-noun`` keys, ample for needle keys) and, where a task needs more distinct
words than that (common-words extraction at long lengths needs thousands), extend them with
pronounceable pseudo-words built from consonant-vowel syllables, so that every length works
without a word list the size of a dictionary.

All randomness comes from the ``random.Random`` passed in: the same generator state gives the same
values on every machine (``Random`` is seeded from a string in the task generators).
"""

from __future__ import annotations

import random
import string
import uuid

ADJECTIVES = """
able absent active actual afraid agile alert alive ample ancient angry annual anxious aware awful
basic bitter blank bland blind bold brave brief bright brisk broad broken busy calm candid careful
casual cheap chief chilly civil classic clean clear clever close cloudy coarse cold common cool
correct cosmic costly cozy crisp crude cruel curious curly damp daring dark dear decent deep dense
direct dirty distant divine dizzy double dry dual dull dusty eager early earnest easy elastic
elegant empty endless entire equal even exact exotic expert extra faint fair faithful false famous
fancy fast fatal feeble fierce final fine firm fiscal flat flexible fluffy fond formal fragile
frank free fresh friendly frozen full funny fuzzy gentle genuine giant glad global glossy golden
good graceful grand gray great green grim gross happy hard harsh heavy helpful hidden high hollow
honest huge humble hungry icy ideal idle immense inner intense ironic jolly juicy keen kind large
late lazy lean legal level light likely little lively local lonely long loose loud lovely loyal
lucky lunar magic major mature meager mellow mental merry mild minor misty modern modest moist
mortal muddy murky mutual naive narrow nasty native neat nervous new nice noble noisy normal novel
odd old open optimal oral orange outer pale partial patient plain pleasant plush polite poor
portable precise pretty primary prime private proud public pure purple quick quiet radiant rapid
rare raw ready real rear regular remote rich rigid ripe robust rough round royal rural rusty sacred
safe salty scarce secret secure serene severe shallow sharp shiny short shy silent silky silver
simple sincere single slim slow small smart smooth snowy soft solar solid sour spare spicy steady
steep sticky stiff still strange strict strong sturdy subtle sudden sunny super sweet swift tall
tame tender thick thin tidy tight tiny topical total tough tranquil tropical true typical ugly
unique upper urban urgent usual vague valid vast verbal vivid vocal warm weak weary wet whole wide
wild wise witty wooden worthy young zany zealous
"""

NOUNS = """
actor airport album anchor angle animal answer apple arch arena army arrow artist atom attic
author autumn avenue badge bakery balcony ball banana band bank barn barrel basket beach beacon
bear bell bench berry bicycle bird blanket blossom boat bone book border bottle boulder branch
bread bridge brook brush bucket buffalo bugle cabin cable cactus cake camel camera canal candle
canoe canyon captain carpet castle cattle cave cedar cellar chair chalk channel chapel cherry
chest chimney circle city cliff clock cloud coast coffee comet compass copper coral cottage
cotton country crane crater crayon creek cricket crown crystal cup curtain cushion daisy dancer
desert desk diamond dinner doctor dolphin donkey door dragon drum eagle earth echo elbow engine
envelope fabric falcon farmer feather fence ferry field finger fire flag flame flower flute
forest fountain fox frog garden gate giraffe glacier glass globe glove goat granite grape grass
guitar hammer harbor harvest hat hawk helmet hill honey horizon horse island ivory jacket jaguar
jar jewel jungle kettle key kitchen kite ladder lake lamp lantern lemon letter library lighthouse
lily lion lizard lobster machine magnet mango map marble market meadow melody mirror monkey moon
mountain mouse museum needle nest night ocean office olive onion orchard otter owl oyster paddle
palace panda paper parrot pearl pebble pencil pepper piano pigeon pillow pine pirate planet plum
pocket poem pond poet potato prism pumpkin puzzle pyramid quarry queen rabbit radio rain raven
reef ribbon river road robot rocket roof rose saddle sailor salmon sand satellite scarf school
scroll seal shadow shark shelf shell ship shore silk singer sky sled snail snow soldier song
sparrow spider spoon spring square squirrel stable star statue stone storm stream street sugar
summit sun swan sword table teacher temple tent thunder tiger timber tower tractor train tree
trumpet tulip tunnel turtle umbrella valley vase village violin volcano wagon wall walnut wave
whale wheat wheel whistle window winter wizard wolf wool yard zebra
"""

VERBS = """
accept achieve adapt admire advise agree allow amuse answer appear arrange arrive ask attach
avoid bake balance bathe begin behave believe belong bend blink boast boil borrow bounce breathe
build burn calculate call carry catch change chase cheer chew choose clap climb collect compare
complain connect consider cook copy count cover crawl create cross cry dance decide deliver
depend describe design destroy develop dig discover divide dream drink drive earn eat enjoy enter
escape examine exist expand explain explore fasten fetch fill find fix float fly fold follow
forget forgive gather glow grab greet grow guard guess guide hang happen hear help hide hope hunt
hurry imagine improve include invent invite join jump juggle kick knit knock laugh lead learn
lift listen live look love manage march measure melt mix move notice obey observe offer open
order paint pause perform pick plant play point polish pour praise pray prefer prepare present
press print promise protect pull push puzzle question race reach read receive record reflect
relax remember repair repeat reply rescue rest return ride ring rise roll rush sail scatter
search serve shake share shine shout sing sink sit skip sleep slide smile sneeze solve sort speak
spill spin splash spray stack stamp stare start stay steer stir stretch study succeed suggest
supply support surprise swim swing talk taste teach tease thank think throw tickle touch trace
trade travel trust try tumble turn twist type unite unlock vanish visit wait walk wander want
warn wash watch wave weave whisper win wink wish wonder work worry wrap write yawn yell zoom
"""

ADJECTIVES = tuple(sorted(set(ADJECTIVES.split())))
NOUNS = tuple(sorted(set(NOUNS.split())))
VERBS = tuple(sorted(set(VERBS.split())))
#: the plain words of the embedded lists (nouns, adjectives, verbs), sorted, no duplicates
WORDS = tuple(sorted(set(ADJECTIVES) | set(NOUNS) | set(VERBS)))

_ONSETS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_SYLLABLES = tuple(c + v for c in _ONSETS for v in _VOWELS)  # 70 syllables


def random_number(rng: random.Random, num_digits: int = 7) -> str:
    """A decimal number of exactly ``num_digits`` digits (RULER's needle values: 7 digits)."""
    return str(rng.randint(10 ** (num_digits - 1), 10**num_digits - 1))


def random_key_word(rng: random.Random) -> str:
    """An ``adjective-noun`` pair, RULER's word keys (e.g. ``"brave-harbor"``)."""
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"


def random_uuid(rng: random.Random) -> str:
    """A version-4 UUID string drawn from ``rng`` (as RULER does, from 128 random bits)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def random_value(kind: str, rng: random.Random) -> str:
    """A needle key or value of RULER's type ``kind``: ``numbers``, ``words`` or ``uuids``."""
    if kind == "numbers":
        return random_number(rng)
    if kind == "words":
        return random_key_word(rng)
    if kind == "uuids":
        return random_uuid(rng)
    raise ValueError(f"kind={kind!r} is not a value type: use 'numbers', 'words' or 'uuids'")


def distinct_values(
    kind: str, rng: random.Random, count: int, exclude: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """``count`` distinct values of type ``kind``, none of them in ``exclude``."""
    out: list[str] = []
    seen = set(exclude)
    while len(out) < count:
        v = random_value(kind, rng)
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def _distinct_strings(rng: random.Random, count: int, letters: str, length: int, exclude=frozenset()) -> list[str]:
    """``count`` distinct random strings of ``length`` of ``letters``, none in ``exclude``, in the
    order drawn (a repeat is drawn again)."""
    out: list[str] = []
    seen = set(exclude)
    while len(out) < count:
        v = "".join(rng.choices(letters, k=length))
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def variable_names(rng: random.Random, count: int, num_letters: int = 5, exclude=frozenset()) -> list[str]:
    """``count`` distinct upper-case names of ``num_letters`` letters (RULER's ``VAR`` names)."""
    return _distinct_strings(rng, count, string.ascii_uppercase, num_letters, exclude)


def coded_words(rng: random.Random, count: int, length: int = 6) -> list[str]:
    """``count`` distinct random lower-case strings of ``length`` letters (RULER's coded words)."""
    return _distinct_strings(rng, count, string.ascii_lowercase, length)


def word_pool(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct words in random order: the embedded words first, then pseudo-words.

    Pseudo-words are three consonant-vowel syllables (``"kodami"``), 343 000 of them, never equal
    to an embedded word; they are only drawn when ``count`` exceeds the embedded lists.
    """
    if count < 0:
        raise ValueError(f"count={count} must be >= 0")
    words = list(WORDS)
    rng.shuffle(words)
    if count <= len(words):
        return words[:count]
    seen = set(words)
    limit = len(words) + len(_SYLLABLES) ** 3
    if count > limit:
        raise ValueError(f"count={count} exceeds the {limit} available words")
    while len(words) < count:
        w = "".join(rng.choices(_SYLLABLES, k=3))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words
