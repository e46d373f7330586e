"""English text normalisation for synthesis: what a reader says for digits, money, dates, times and symbols.

``normalize("Meet me at 7:30 p.m. on Jan. 5, 2024; it costs $12.50.")`` gives
``"Meet me at seven thirty p m on January fifth, twenty twenty-four; it costs twelve dollars, fifty cents."``.
Words and punctuation that steer prosody (``, . ; : ? !``) are kept; espeak-ng does the rest (G2P, case).

Every rule is a regular expression over at most ``MAX_RULE_WORDS`` whitespace-separated words, which is what
lets the incremental front end (``tts.frontend``) commit text with a bounded lookahead and still give the
same words as normalising the whole text at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from num2words import num2words

MAX_RULE_WORDS = 3  # the longest rule ("January 5, 2024") spans three words

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"]
MONTH_ABBREVIATIONS = {m[:3]: m for m in MONTHS} | {"sept": "september"}
CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
              "€": ("euro", "euros", "cent", "cents")}
SCALES = {"k": "thousand", "thousand": "thousand", "m": "million", "mn": "million", "million": "million",
          "b": "billion", "bn": "billion", "billion": "billion", "trillion": "trillion"}
ABBREVIATIONS = {
    "mr": "mister", "mrs": "missus", "ms": "miz", "dr": "doctor", "prof": "professor", "jr": "junior",
    "sr": "senior", "st": "saint", "ave": "avenue", "blvd": "boulevard", "rd": "road", "mt": "mount",
    "vs": "versus", "etc": "et cetera", "approx": "approximately", "dept": "department", "no": "number",
    "e.g": "for example", "i.e": "that is", "a.m": "a m", "p.m": "p m",
}
TITLES = {"mr", "mrs", "ms", "dr", "prof", "st", "mt", "no"}  # always followed by a name or a number
UNITS = {"km": "kilometers", "kg": "kilograms", "cm": "centimeters", "mm": "millimeters", "m": "meters",
         "g": "grams", "mg": "milligrams", "lb": "pounds", "lbs": "pounds", "oz": "ounces", "ft": "feet",
         "mi": "miles", "mph": "miles per hour", "kph": "kilometers per hour", "km/h": "kilometers per hour",
         "ml": "milliliters", "l": "liters", "gb": "gigabytes", "mb": "megabytes", "kb": "kilobytes",
         "tb": "terabytes", "ghz": "gigahertz", "mhz": "megahertz", "hz": "hertz", "kw": "kilowatts",
         "w": "watts", "v": "volts", "s": "seconds", "ms": "milliseconds", "min": "minutes", "h": "hours",
         "hr": "hours", "hrs": "hours", "°c": "degrees celsius", "°f": "degrees fahrenheit"}
SYMBOLS = {"&": " and ", "@": " at ", "+": " plus ", "=": " equals ", "°": " degrees ", "%": " percent ",
           "#": " number ", "~": " about ", "×": " times ", "/": " slash ", "*": " ", "_": " ", "|": " ",
           "<": " less than ", ">": " greater than ", "^": " ", "\\": " ", "[": " ", "]": " ", "{": " ",
           "}": " "}
QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "–": "-", "—": " - ", "…": "..."})


def spell_number(digits: str) -> str:
    """Cardinal of a number written with optional thousands commas and a decimal part."""
    return num2words(digits.replace(",", "")) if "." in digits else num2words(int(digits.replace(",", "")))


def _number(value: str) -> float | int:
    clean = value.replace(",", "")
    return float(clean) if "." in clean else int(clean)


def _money(m: re.Match) -> str:
    one, many, cent_one, cents_many = CURRENCIES[m["cur"]]
    whole, fraction, scale = m["whole"], m["frac"], m["scale"]
    if scale:
        amount = spell_number(whole + (f".{fraction}" if fraction else ""))
        return f"{amount} {SCALES[scale.lower()]} {many}"
    dollars = int(whole.replace(",", ""))
    spoken = f"{num2words(dollars)} {one if dollars == 1 else many}"
    if fraction and int(fraction.ljust(2, "0")):
        cents = int(fraction.ljust(2, "0"))
        spoken += f" and {num2words(cents)} {cent_one if cents == 1 else cents_many}"
    return spoken


def _time(m: re.Match) -> str:
    hour, minute = int(m["h"]), int(m["m"] or 0)
    if hour > 24 or minute > 59:
        return m[0]
    half = f" {m['half'][0].lower()} m" if m["half"] else ""
    if minute == 0:
        spoken_minute = "" if half else " o'clock"
    elif minute < 10:
        spoken_minute = f" oh {num2words(minute)}"
    else:
        spoken_minute = f" {num2words(minute)}"
    return f"{num2words(hour)}{spoken_minute}{half}"


def _year(value: str) -> str:
    return num2words(int(value), to="year")


def _date(m: re.Match) -> str:
    month = MONTH_ABBREVIATIONS[m["mon"].lower()[:4] if m["mon"].lower().startswith("sept") else m["mon"].lower()[:3]]
    spoken = f"{month} {num2words(int(m['day']), to='ordinal')}"
    return spoken + (f", {_year(m['year'])}" if m["year"] else "")


def _numeric_date(m: re.Match) -> str:
    month, day = int(m["mo"]), int(m["d"])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m[0]
    return f"{MONTHS[month - 1]} {num2words(day, to='ordinal')}, {_year(m['y'])}"


def _iso_date(m: re.Match) -> str:
    month, day = int(m["mo"]), int(m["d"])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m[0]
    return f"{MONTHS[month - 1]} {num2words(day, to='ordinal')}, {_year(m['y'])}"


def _ordinal(m: re.Match) -> str:
    return num2words(int(m["n"].replace(",", "")), to="ordinal")


def _decade(m: re.Match) -> str:
    spoken = _year(m["y"])
    return spoken[:-1] + "ies" if spoken.endswith("y") else spoken + "s"


def _unit(m: re.Match) -> str:
    unit = m["unit"].lower()
    name = UNITS[unit]
    if _number(m["n"]) == 1:
        singular = {"feet": "foot", "degrees celsius": "degree celsius", "degrees fahrenheit": "degree fahrenheit"}
        name = singular.get(name, name[:-1] if name.endswith("s") and " per " not in name else name)
    return f"{spell_number(m['n'])} {name}"


def _abbreviation(m: re.Match) -> str:
    word, before, after = m["abbr"], m["before"] or "", m["after"] or ""
    lower = word.lower()
    if (before and lower != "st") or (lower == "no" and not after[1:2].isdigit()):
        return m[0]  # "5 ms." is a unit, "no." without a number is the word
    spoken = ABBREVIATIONS[lower]
    if lower == "st" and not after[1:2].isupper():
        spoken = "street"  # "Main St." but "St. Louis"
    ends_sentence = lower not in TITLES and (not after or after[1:2].isupper())
    return before + (spoken.capitalize() if word[0].isupper() else spoken) + "." * ends_sentence + after


def _integer(m: re.Match) -> str:
    digits = m["n"]
    value = int(digits.replace(",", ""))
    if "," not in digits and (len(digits) >= 5 or (len(digits) > 1 and digits[0] == "0")):
        return " ".join("zero" if d == "0" else num2words(int(d)) for d in digits)  # codes, phone numbers
    if "," not in digits and len(digits) == 4:
        return _year(digits)  # years, house numbers: "nineteen ninety", "eighty-five forty-six"
    return num2words(value)


NUMBER = r"\d{1,3}(?:,\d{3})+|\d+"
RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"(?P<before>\d+\s)?\b(?P<abbr>" + "|".join(re.escape(a) for a in ABBREVIATIONS) +
                r")\.(?P<after>\s\S)?", re.IGNORECASE), _abbreviation),
    (re.compile(rf"(?P<cur>[$£€])\s?(?P<whole>{NUMBER})(?:\.(?P<frac>\d+))?"
                rf"(?:\s?(?P<scale>thousand|million|billion|trillion|bn|mn|[kmb])\b)?", re.IGNORECASE), _money),
    (re.compile(r"(?<![\w.])-(?=\d)"), lambda m: "minus "),
    (re.compile(r"\b(?P<y>\d{4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2})\b"), _iso_date),
    (re.compile(r"\b(?P<mo>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})\b"), _numeric_date),
    (re.compile(r"\b(?P<h>\d{1,2}):(?P<m>\d{2})(?:\s?(?P<half>[ap])\.?\s?m\b(?:\.(?=\s+(?-i:[a-z0-9])))?)?", re.IGNORECASE), _time),
    (re.compile(r"\b(?P<h>\d{1,2})()(?P<m>)\s?(?P<half>[ap])\.?\s?m\b(?:\.(?=\s+(?-i:[a-z0-9])))?", re.IGNORECASE), _time),
    (re.compile(r"\b(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sept?|oct|nov|dec)[a-z]*\.?\s+(?P<day>\d{1,2})"
                r"(?:st|nd|rd|th)?\b(?:,?\s+(?P<year>\d{4})\b)?", re.IGNORECASE), _date),
    (re.compile(r"\b(?P<y>1[1-9]\d0|20\d0)'?s\b"), _decade),
    (re.compile(rf"\b(?P<n>{NUMBER})(?:st|nd|rd|th)\b", re.IGNORECASE), _ordinal),
    (re.compile(rf"(?<![\w.])(?P<n>(?:{NUMBER})(?:\.\d+)?)\s?(?P<unit>km/h|°[cf]|" +
                "|".join(sorted((u for u in UNITS if "/" not in u and "°" not in u), key=len, reverse=True)) +
                r")(?![\w/])", re.IGNORECASE), _unit),
    (re.compile(rf"(?P<n>(?:{NUMBER})(?:\.\d+)?)\s?%"), lambda m: f"{spell_number(m['n'])} percent"),
    (re.compile(r"\b(?P<n>\d+\.\d+)\b"), lambda m: spell_number(m["n"])),
    (re.compile(rf"\b(?P<n>{NUMBER})\b"), _integer),
]


def normalize(text: str) -> str:
    """Written English -> the words a reader says, with prosody punctuation kept (see the module doc)."""
    text = text.translate(QUOTES)
    for pattern, spoken in RULES:
        text = pattern.sub(spoken, text)
    for symbol, spoken in SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = re.sub(r'["()]', " ", text)
    text = re.sub(r"\.{3,}", ",", text)  # an ellipsis is a pause
    text = re.sub(r"\.{2}", ".", text)  # espeak-ng reads ".." as "dot"
    text = re.sub(r"\s+([,.;:?!])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()
