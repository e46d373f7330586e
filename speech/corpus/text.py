"""A seeded generator of varied English for synthetic speech, with a written and a spoken form.

The written form is what a person types ("Meet me at 7:30 on May 3rd."); the spoken form is what a voice
says, normalised to lower-case words ("meet me at seven thirty on may third"). Voices are given the
spoken form, so the ASR label is exactly what was said whatever an engine's own text normalisation does.

Train and test text are disjoint by construction: a sentence belongs to the split its normalised
spoken form hashes to, and each split's generator rejects the other's sentences. ``heldout.txt`` beside
this file is a fixed list of test sentences.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from num2words import num2words

from asr.text import normalise  # the one normalisation of labels, splits and WER

TEST_SHARE = 10  # one sentence in ten belongs to the test split
HELDOUT_PATH = Path(__file__).with_name("heldout.txt")


@dataclass(frozen=True)
class Sentence:
    written: str
    spoken: str
    category: str


def split_of(text: str) -> str:
    digest = hashlib.sha1(normalise(text).encode()).digest()
    return "test" if int.from_bytes(digest[:4], "big") % TEST_SHARE == 0 else "train"


def say_number(n: float) -> str:
    return normalise(num2words(n))


FIRST = ["james", "mary", "robert", "patricia", "john", "jennifer", "michael", "linda", "david", "elizabeth", "william", "barbara", "richard", "susan", "joseph", "jessica", "thomas", "sarah", "charles", "karen", "christopher", "lisa", "daniel", "nancy", "matthew", "betty", "anthony", "margaret", "mark", "sandra", "donald", "ashley", "steven", "kimberly", "andrew", "emily", "paul", "donna", "joshua", "michelle", "kenneth", "carol", "kevin", "amanda", "brian", "melissa", "george", "deborah", "timothy", "stephanie", "ronald", "rebecca", "jason", "laura", "edward", "sharon", "jeffrey", "cynthia", "ryan", "kathleen", "jacob", "amy", "gary", "angela", "nicholas", "shirley", "eric", "anna", "jonathan", "brenda", "stephen", "pamela", "larry", "emma", "justin", "nicole", "scott", "helen", "brandon", "samantha", "benjamin", "katherine", "samuel", "christine", "gregory", "debra", "alexander", "rachel", "frank", "carolyn", "patrick", "janet", "raymond", "maria", "jack", "olivia", "dennis", "heather", "jerry", "diane", "tyler", "julie", "aaron", "joyce", "jose", "victoria", "adam", "kelly", "priya", "wei", "ahmed", "sofia", "mateo", "yuki", "olga", "kwame", "fatima", "lars", "ingrid", "mohammed", "aisha", "carlos", "lucia", "hiroshi", "mei"]
LAST = ["smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez", "martinez", "hernandez", "lopez", "gonzalez", "wilson", "anderson", "thomas", "taylor", "moore", "jackson", "martin", "lee", "perez", "thompson", "white", "harris", "sanchez", "clark", "ramirez", "lewis", "robinson", "walker", "young", "allen", "king", "wright", "scott", "torres", "nguyen", "hill", "flores", "green", "adams", "nelson", "baker", "hall", "rivera", "campbell", "mitchell", "carter", "roberts", "gomez", "phillips", "evans", "turner", "diaz", "parker", "cruz", "edwards", "collins", "reyes", "stewart", "morris", "morales", "murphy", "cook", "rogers", "gutierrez", "ortiz", "morgan", "cooper", "peterson", "bailey", "reed", "kelly", "howard", "ramos", "kim", "cox", "ward", "richardson", "watson", "brooks", "chavez", "wood", "james", "bennett", "gray", "mendoza", "ruiz", "hughes", "price", "alvarez", "castillo", "sanders", "patel", "myers", "long", "ross", "foster", "jimenez", "okafor", "nakamura", "kowalski", "schmidt", "novak", "larsen", "dubois", "rossi"]
CITIES = [c.strip() for c in ["london", " paris", " tokyo", " chicago", " boston", " denver", " seattle", " atlanta", " houston", " dallas", "\nphoenix", " miami", " toronto", " vancouver", " montreal", " sydney", " melbourne", " dublin", " edinburgh", " glasgow", " manchester", " liverpool", "\nberlin", " munich", " vienna", " prague", " madrid", " barcelona", " lisbon", " rome", " milan", " naples", " athens", " cairo", " nairobi", " lagos", "\nmumbai", " delhi", " bangalore", " singapore", " seoul", " osaka", " beijing", " shanghai", " bangkok", " jakarta", " manila", " auckland", " lima", "\nbogota", " santiago", " buenos aires", " mexico city", " new york", " los angeles", " san francisco", " portland", " austin", " nashville", "\ndetroit", " cleveland", " pittsburgh", " baltimore", " philadelphia", " oakland", " sacramento", " honolulu", " anchorage", " reno", " tucson", "\nomaha", " memphis", " orlando", " tampa", " richmond", " raleigh", " charlotte"]]
COUNTRIES = ["france", "germany", "spain", "italy", "portugal", "ireland", "scotland", "wales", "norway", "sweden", "finland", "denmark", "poland", "greece", "turkey", "egypt", "kenya", "nigeria", "ghana", "morocco", "india", "china", "japan", "korea", "vietnam", "thailand", "brazil", "argentina", "chile", "peru", "colombia", "canada", "mexico", "australia", "iceland", "austria", "hungary", "romania"]
STREETS = ["main", "oak", "maple", "cedar", "pine", "elm", "washington", "lake", "hill", "park", "river", "sunset", "highland", "church", "spring", "mill", "chestnut", "walnut", "jefferson", "lincoln", "madison", "franklin", "meadow", "forest", "willow"]
STREET_KINDS = ["street", "avenue", "road", "lane", "drive", "boulevard", "court", "place"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
THINGS = ["umbrella", "ticket", "package", "report", "laptop", "invoice", "letter", "key", "coffee", "sandwich", "bicycle", "camera", "jacket", "passport", "notebook", "receipt", "charger", "blanket", "guitar", "lamp", "suitcase", "calendar", "battery", "bottle", "map"]
ROOMS = ["kitchen", "bedroom", "living room", "office", "garage", "hallway", "bathroom", "basement", "garden"]
DEVICES = ["lights", "heater", "fan", "radio", "television", "oven", "dishwasher", "alarm", "music", "air conditioning"]
ADJECTIVES = ["quiet", "bright", "cold", "warm", "early", "late", "busy", "empty", "heavy", "light", "careful", "quick", "slow", "strange", "familiar", "narrow", "wide", "gentle", "loud", "simple"]
VERBS_PAST = ["found", "missed", "called", "visited", "repaired", "painted", "borrowed", "returned", "ordered", "cancelled", "delivered", "forgot", "noticed", "finished", "started", "cleaned", "packed", "moved", "checked"]
CONNECTORS = ["because", "although", "while", "but", "so", "and then", "even though", "until", "after", "before"]
CLAUSES = [
    "the train was delayed by the storm", "{name} had already left the building",
    "nobody remembered to lock the back door", "the meeting ran much longer than expected",
    "the shop on the corner closed early", "we had to wait for the next bus",
    "the weather changed without warning", "the children were playing in the {room}",
    "the {thing} was still on the table", "{name} could not find the {thing}",
    "the phone kept ringing in the {room}", "the road to {city} was closed",
    "everyone agreed to try again tomorrow", "the lights went out for an hour",
    "the price of the {thing} went up again", "she {verb} the {thing} last {day}",
    "he {verb} the {adj} {thing} in {city}", "the {adj} morning made everything feel slower",
]


class TextGenerator:
    """``TextGenerator(seed, split).sentences(n)``: deterministic for a seed, only sentences of ``split``."""

    def __init__(self, seed: int = 0, split: str = "train", extra: Iterable[str] = ()) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split is 'train' or 'test', got {split!r}")
        self.rng = random.Random(seed)
        self.split = split
        self.extra = [s for s in dict.fromkeys(normalise(e) for e in extra) if s and split_of(s) == split]
        self.makers: list[tuple[str, Callable[[], tuple[str, str]]]] = [
            ("numbers", self._numbers), ("dates", self._dates), ("times", self._times), ("money", self._money),
            ("names", self._names), ("places", self._places), ("addresses", self._addresses),
            ("commands", self._commands), ("questions", self._questions), ("compound", self._compound),
            ("spelled", self._spelled),
        ]

    def sentences(self, n: int) -> list[Sentence]:
        return [s for s, _ in zip(self, range(n))]

    def __iter__(self) -> Iterator[Sentence]:
        while True:
            if self.extra and self.rng.random() < 0.15:
                text = self.rng.choice(self.extra)
                yield Sentence(text, text, "transcript")
                continue
            category, make = self.rng.choice(self.makers)
            written, spoken = make()
            spoken = normalise(spoken)
            if spoken and split_of(spoken) == self.split:
                yield Sentence(written, spoken, category)

    # fillers ----------------------------------------------------------------------------------------
    def _pick(self, items):
        return self.rng.choice(items)

    def _fill(self, template: str) -> str:
        return template.format(
            name=self._pick(FIRST).title(), city=self._pick(CITIES).title(), thing=self._pick(THINGS),
            room=self._pick(ROOMS), verb=self._pick(VERBS_PAST), adj=self._pick(ADJECTIVES), day=self._pick(DAYS),
        )

    # categories: each returns (written, spoken) ---------------------------------------------------
    def _numbers(self):
        r = self.rng
        kind = r.randrange(4)
        if kind == 0:
            n = r.choice([r.randrange(2, 20), r.randrange(20, 100), r.randrange(100, 10000), r.randrange(10**4, 10**7)])
            noun = self._pick(["people", "boxes", "tickets", "miles", "votes", "pages", "steps", "visitors"])
            return f"There were {n:,} {noun}.", f"there were {say_number(n)} {noun}"
        if kind == 1:
            p = r.randrange(1, 100)
            return f"Sales grew by {p}% this quarter.", f"sales grew by {say_number(p)} percent this quarter"
        if kind == 2:
            whole, frac = r.randrange(0, 100), r.randrange(1, 10)
            spoken = f"{say_number(whole)} point {say_number(frac)}"
            return f"The reading was {whole}.{frac} degrees.", f"the reading was {spoken} degrees"
        digits = [r.randrange(10) for _ in range(r.choice([4, 6, 7]))]
        return (f"My code is {''.join(map(str, digits))}.",
                "my code is " + " ".join("zero" if d == 0 else say_number(d) for d in digits))

    def _dates(self):
        r = self.rng
        month, day, year = r.randrange(12), r.randrange(1, 29), r.randrange(1950, 2040)
        lead = self._pick(["The appointment is on", "She was born on", "We moved on", "The deadline is", "It happened on"])
        spoken_year = normalise(num2words(year, to="year"))
        ordinal = normalise(num2words(day, to="ordinal"))
        if r.random() < 0.5:
            return (f"{lead} {MONTHS[month].title()} {day}, {year}.",
                    f"{lead} {MONTHS[month]} {ordinal} {spoken_year}")
        weekday = self._pick(DAYS)
        suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
        return (f"{lead} {weekday.title()}, the {day}{suffix} of {MONTHS[month].title()}.",
                f"{lead} {weekday} the {ordinal} of {MONTHS[month]}")

    def _times(self):
        r = self.rng
        hour, minute = r.randrange(1, 13), r.choice([0, 5, 10, 15, 20, 30, 40, 45, 50, r.randrange(1, 60)])
        half = self._pick(["a.m.", "p.m.", ""])
        lead = self._pick(["Meet me at", "The train leaves at", "Wake me up at", "The shop opens at", "Call back at"])
        if minute == 0:
            spoken_minute = "o'clock" if not half else ""
        elif minute < 10:
            spoken_minute = f"oh {say_number(minute)}"
        else:
            spoken_minute = say_number(minute)
        spoken_half = {"a.m.": "a m", "p.m.": "p m", "": ""}[half]
        written = f"{lead} {hour}:{minute:02d} {half}".strip() + "."
        return written, f"{lead} {say_number(hour)} {spoken_minute} {spoken_half}"

    def _money(self):
        r = self.rng
        dollars, cents = r.choice([r.randrange(1, 20), r.randrange(20, 1000), r.randrange(1000, 100000)]), r.randrange(0, 100)
        lead = self._pick(["The total comes to", "I paid", "It costs", "The fine was", "We raised"])
        spoken = f"{say_number(dollars)} dollar{'s' * (dollars != 1)}"
        if cents:
            spoken += f" and {say_number(cents)} cent{'s' * (cents != 1)}"
            return f"{lead} ${dollars:,}.{cents:02d}.", f"{lead} {spoken}"
        return f"{lead} ${dollars:,}.", f"{lead} {spoken}"

    def _names(self):
        first, last = self._pick(FIRST).title(), self._pick(LAST).title()
        text = self._pick([
            f"Please tell {first} {last} that the package arrived.", f"{first} {last} will join the call later.",
            f"Have you met {first} from accounting?", f"This is {first} {last} speaking.",
            f"{first} and {self._pick(FIRST).title()} are driving to {self._pick(CITIES).title()}.",
        ])
        return text, text

    def _places(self):
        text = self._pick([
            f"The flight from {self._pick(CITIES).title()} to {self._pick(CITIES).title()} was full.",
            f"We spent a week in {self._pick(COUNTRIES).title()} last summer.",
            f"Is it raining in {self._pick(CITIES).title()} today?",
            f"Her cousin lives near {self._pick(CITIES).title()} in {self._pick(COUNTRIES).title()}.",
        ])
        return text, text

    def _addresses(self):
        r = self.rng
        number = r.choice([r.randrange(1, 100), r.randrange(100, 10000)])
        street = f"{self._pick(STREETS).title()} {self._pick(STREET_KINDS).title()}"
        unit = r.randrange(1, 40)
        written = f"Send it to {number} {street}, apartment {unit}, {self._pick(CITIES).title()}."
        spoken_number = say_number(number) if number < 100 or number % 100 == 0 else (
            f"{say_number(number // 100)} {say_number(number % 100)}" if number % 100 >= 10
            else f"{say_number(number // 100)} oh {say_number(number % 100)}")
        return written, written.replace(str(number), spoken_number, 1).replace(f"apartment {unit}", f"apartment {say_number(unit)}")

    def _commands(self):
        r = self.rng
        minutes = r.randrange(1, 61)
        text = self._pick([
            f"Turn off the {self._pick(DEVICES)} in the {self._pick(ROOMS)}.",
            f"Set a timer for {minutes} minutes.", f"Remind me to buy a new {self._pick(THINGS)} tomorrow.",
            f"Play some {self._pick(['jazz', 'rock', 'classical', 'folk', 'quiet'])} music in the {self._pick(ROOMS)}.",
            f"Call {self._pick(FIRST).title()} on speaker.", f"Turn the {self._pick(DEVICES)} up a little.",
            f"Cancel my {self._pick(DAYS).title()} meeting.", "Read me the last message.",
        ])
        return text, text.replace(f"{minutes} minutes", f"{say_number(minutes)} minute{'s' * (minutes != 1)}")

    def _questions(self):
        text = self._pick([
            f"Where did you leave the {self._pick(THINGS)}?", f"How long does it take to get to {self._pick(CITIES).title()}?",
            f"Why is the {self._pick(DEVICES)} still on?", f"Who is picking up {self._pick(FIRST).title()} on {self._pick(DAYS).title()}?",
            f"Can you check whether the {self._pick(ROOMS)} window is closed?", f"What time does the {self._pick(['bank', 'library', 'pharmacy', 'museum'])} close?",
            f"Would you rather visit {self._pick(COUNTRIES).title()} or {self._pick(COUNTRIES).title()}?",
        ])
        return text, text

    def _compound(self):
        clauses = [self._fill(c) for c in self.rng.sample(CLAUSES, 3 if self.rng.random() < 0.5 else 2)]
        text = f"{clauses[0][0].upper()}{clauses[0][1:]} {self._pick(CONNECTORS)} {clauses[1]}"
        if len(clauses) == 3:
            text += f", {self._pick(CONNECTORS)} {clauses[2]}"
        return text + ".", text

    def _spelled(self):
        word = self._pick(LAST + FIRST)
        lead = self._pick(["My name is spelled", "The code is", "Spell it", "That is"])
        return f"{lead} {'-'.join(word.upper())}.", f"{lead} {' '.join(word)}"


# Real transcripts that synthetic voices may read: never the ASR evaluation sets (DESIGN.md section 5).
TRANSCRIPT_SETS = ("ljspeech385/manifest.tsv", "an4/train.tsv")


def training_transcripts(data_dir: Path) -> list[str]:
    """Texts of the real sets that training may use (missing sets are skipped)."""
    texts = []
    for name in TRANSCRIPT_SETS:
        manifest = Path(data_dir) / name
        if manifest.exists():
            rows = [line.split("\t") for line in manifest.read_text().splitlines()]
            column = rows[0].index("text")
            texts += [row[column] for row in rows[1:] if len(row) > column and row[column].strip()]
    return texts


def heldout_sentences() -> list[str]:
    """The fixed held-out test sentences (spoken form), one per line in ``heldout.txt``."""
    return [line for line in HELDOUT_PATH.read_text().splitlines() if line]
