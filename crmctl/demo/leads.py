"""A seeded generator of lead files with ground truth: the same people in four source shapes.

Four sources, as a RevOps analyst receives them:

- ``web_form.csv`` (web form): email, sometimes a first name, campaign, medium, timestamp;
- ``dialler.csv`` (sales dialler): call id, full name (sometimes "Last, First"), phone, email, country;
- ``events.csv`` (event registration): email, first/last name, company, job title;
- ``support.csv`` (support desk): ticket id, requester name and email, helpdesk user id.

Realistic corruptions: case and whitespace, Gmail dots / +tags / googlemail, nicknames, dropped
accents, swapped names, typos, phone formats and extensions, invalid phones, company suffix
variants, personal vs work addresses. Hard negatives: common names at big companies (each with their
own work address, e.g. j.smith@ and jo.smith@), and households sharing one phone.

``truth.csv`` maps (source, source_record_id) to the person each row describes.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmctl.importers.leads import LeadImportOptions

__all__ = ["LeadFile", "write_lead_files"]


@dataclass
class LeadFile:
    path: Path
    source: str
    id_column: str | None

    def import_options(self, **overrides: Any) -> LeadImportOptions:
        """Options that import this file as its source (``overrides``: any other option)."""
        from crmctl.importers.leads import LeadImportOptions  # the generator alone needs no importer

        return LeadImportOptions(
            **{"paths": [self.path], "source": self.source, "id_column": self.id_column, **overrides}
        )


FIRST_NAMES = (  # noqa: SIM905
    "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara Richard "
    "Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Nancy Daniel Lisa Matthew Margaret "
    "Anthony Betty Mark Sandra Donald Ashley Steven Kimberly Paul Emily Andrew Donna Joshua Michelle "
    "Kenneth Dorothy Kevin Carol Brian Amanda George Melissa Edward Deborah Ronald Stephanie Timothy "
    "Rebecca Jason Sharon Jeffrey Laura Ryan Cynthia Jacob Kathleen Gary Amy Nicholas Shirley Eric "
    "Angela Jonathan Helen Stephen Anna Larry Brenda Justin Pamela Scott Nicole Brandon Samantha "
    "Benjamin Katherine Samuel Emma Gregory Ruth Frank Christine Alexander Catherine Raymond Debra "
    "Patrick Rachel Jack Carolyn Dennis Janet Jerry Virginia Tyler Maria Aaron Heather Jose Diane "
    "Henry Julie Adam Joyce Douglas Victoria Nathan Kelly Peter Christina Zachary Joan Kyle Evelyn "
    "Noah Lauren Alan Judith Ethan Olivia Jeremy Martha Lionel Cheryl Christian Megan Walter Andrea "
    "Keith Hannah Roger Jacqueline Terry Ann Sean Jean Gerald Alice Carl Kathryn Harold Gloria "
    "Dylan Teresa Arthur Doris Lawrence Sara Jordan Janice Jesse Julia Bryan Marie Billy Madison "
    "Bruce Grace Gabriel Judy Joe Theresa Logan Beverly Albert Denise Willie Marilyn Alan Amber "
    "Priya Rahul Wei Mei Hiroshi Yuki Olga Dmitri Fatima Omar Aisha Mohammed Ingrid Lars Sven "
    "Astrid Chloé Zoë José Renée Mónica Björn Jürgen Søren Łukasz Ana Inês Noémie Siobhán Seán "
    "Ngozi Chinedu Kwame Amara Thabo Anika Kofi Nia Mateo Lucía Agustín Valentina Camila Thiago "
    "Leilani Kai Anders Freya Niamh Oisín Tomasz Zofia Katarzyna Piotr Giulia Matteo Francesca"
).split()
LAST_NAMES = (  # noqa: SIM905
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips "
    "Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers "
    "Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson "
    "Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders "
    "Patel Myers Long Ross Foster Jimenez Powell Jenkins Perry Russell Sullivan Bell Coleman Butler "
    "Henderson Barnes Gonzales Fisher Vasquez Simmons Romero Jordan Patterson Alexander Hamilton "
    "Graham Reynolds Griffin Wallace Moreno West Cole Hayes Bryant Herrera Gibson Ellis Tran Medina "
    "Aguilar Stevens Murray Ford Castro Marshall Owens Harrison Fernandez McDonald Woods Washington "
    "Kennedy Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter "
    "Hunter Gordon Mendez Silva Shaw Snyder Mason Dixon Muñoz Hunt Hicks Holmes Palmer Wagner Black "
    "Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson "
    "Nichols Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold Pierce "
    "Müller Schröder Weiß Fischer Becker Hoffmann Schäfer Koch Richter Klein Wolf Neumann Schwarz "
    "Zimmermann Braun Krüger Hofmann Hartmann Lange Dubois Lefèvre Moreau Laurent Girard Bonnet "
    "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo Conti "
    "Núñez Peña Ibáñez Sáez Gómez Jiménez Álvarez O'Brien O'Neill Ó'Súilleabháin Kowalski Nowak "
    "Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski Zieliński Szymański Woźniak Dąbrowski Andersson "
    "Johansson Karlsson Nilsson Eriksson Larsson Olsen Hansen Jensen Nielsen Pedersen Sato Suzuki "
    "Takahashi Tanaka Watanabe Ito Yamamoto Nakamura Kobayashi Wang Li Zhang Liu Yang Huang Zhao "
    "Wu Zhou Xu Sun Ma Zhu Hu Guo He Lin Kumar Singh Sharma Gupta Reddy Iyer Nair Menon Rao Das "
    "Okafor Okonkwo Mensah Boateng Abubakar Adeyemi Banda Mwangi Otieno Dlamini Nkosi Khumalo"
).split()
COMPANY_WORDS = (  # noqa: SIM905
    "Acme Globex Initech Umbrella Stark Wayne Wonka Hooli Vandelay Soylent Cyberdyne Tyrell Aperture "
    "Oscorp Massive Dynamic Blue Red Green Silver Golden Iron Summit Harbor River Pine Oak Cedar "
    "North South East West Atlas Apex Vertex Nova Stellar Quantum Fusion Vector Matrix Pixel Cloud "
    "Data Logic Signal Bright Clear Swift Rapid Prime Core Peak Alpine Coastal Urban Metro Civic "
    "Pacific Atlantic Arctic Orbit Lunar Solar Terra Aqua Falcon Eagle Hawk Lion Tiger Bear Wolf "
    "Fox Orchard Meadow Bridge Tower Forge Foundry Works Labs Systems Networks Analytics Robotics"
).split()
COMPANY_SUFFIXES = ("Inc", "Inc.", "LLC", "Ltd", "Limited", "GmbH", "Corp", "Corporation", "Co", "")
JOB_TITLES = (
    "VP Sales", "Head of Marketing", "RevOps Manager", "CTO", "Data Engineer", "Account Executive",
    "Customer Success Manager", "Product Manager", "CFO", "Operations Analyst", "Founder",
)  # fmt: skip
CAMPAIGNS = ("spring-webinar", "ebook-2026", "pricing-page", "newsletter", "free-trial", "partner-referral")
MEDIUMS = ("organic", "cpc", "email", "social", "referral")
PERSONAL_DOMAINS = (
    ("gmail.com", 40),
    ("yahoo.com", 12),
    ("hotmail.com", 10),
    ("outlook.com", 10),
    ("icloud.com", 8),
    ("aol.com", 3),
    ("protonmail.com", 3),
    ("gmx.de", 3),
    ("yahoo.co.uk", 3),
)
NICKNAME_OF = {
    "Robert": "Bob",
    "William": "Bill",
    "Richard": "Rick",
    "James": "Jim",
    "Michael": "Mike",
    "Thomas": "Tom",
    "Christopher": "Chris",
    "Daniel": "Dan",
    "Matthew": "Matt",
    "Anthony": "Tony",
    "Joseph": "Joe",
    "David": "Dave",
    "Steven": "Steve",
    "Edward": "Ed",
    "Charles": "Charlie",
    "Benjamin": "Ben",
    "Samuel": "Sam",
    "Nicholas": "Nick",
    "Alexander": "Alex",
    "Andrew": "Andy",
    "Elizabeth": "Liz",
    "Margaret": "Maggie",
    "Katherine": "Kate",
    "Jennifer": "Jen",
    "Patricia": "Trish",
    "Rebecca": "Becky",
    "Victoria": "Vicky",
    "Jessica": "Jess",
    "Kimberly": "Kim",
    "Pamela": "Pam",
    "Timothy": "Tim",
    "Gregory": "Greg",
    "Jeffrey": "Jeff",
    "Kenneth": "Ken",
    "Ronald": "Ron",
    "Donald": "Don",
    "Lawrence": "Larry",
    "Samantha": "Sam",
    "Cynthia": "Cindy",
    "Deborah": "Debbie",
}
US_AREA_CODES = (212, 415, 312, 617, 206, 303, 512, 404, 305, 702, 646, 718, 773, 818, 213, 469, 503, 612)
SOURCE_SHARES = (("web_form", 0.35), ("dialler", 0.25), ("event", 0.20), ("support", 0.20))
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class _Company:
    name: str
    domain: str
    weight: float


@dataclass
class _Person:
    pid: int
    first: str
    last: str
    company: _Company
    work_email: str
    personal_email: str
    country: str
    phone: str | None  # E.164
    helpdesk_id: str
    title: str


def _zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (i + 1) ** s for i in range(n)]


def _ascii(text: str) -> str:
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", text.replace("ß", "ss").replace("ø", "o").replace("ł", "l"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _slug(text: str) -> str:
    return "".join(c for c in _ascii(text).lower() if c.isalnum())


def _companies(rng: random.Random, people: int) -> list[_Company]:
    count = max(20, people // 25)
    seen: set[str] = set()
    out: list[_Company] = []
    weights = _zipf_weights(count, 1.05)
    tlds = (".com",) * 8 + (".co.uk", ".de", ".io", ".com.au")
    while len(out) < count:
        words = rng.sample(COMPANY_WORDS, 2 if rng.random() < 0.7 else 3)
        name = " ".join(words)
        if name in seen:
            continue
        seen.add(name)
        joiner = "-" if rng.random() < 0.2 else ""
        domain = joiner.join(_slug(w) for w in words) + rng.choice(tlds)
        out.append(_Company(name=name, domain=domain, weight=weights[len(out)]))
    return out


def _people(rng: random.Random, count: int) -> list[_Person]:
    companies = _companies(rng, count)
    company_weights = [c.weight for c in companies]
    first_weights = _zipf_weights(len(FIRST_NAMES), 0.9)
    last_weights = _zipf_weights(len(LAST_NAMES), 0.8)
    work_taken: set[str] = set()
    personal_taken: set[str] = set()
    personal_domains = [d for d, _ in PERSONAL_DOMAINS]
    personal_weights = [w for _, w in PERSONAL_DOMAINS]
    people: list[_Person] = []
    firsts = rng.choices(FIRST_NAMES, first_weights, k=count)
    lasts = rng.choices(LAST_NAMES, last_weights, k=count)
    comps = rng.choices(companies, company_weights, k=count)
    for pid in range(count):
        first, last, company = firsts[pid], lasts[pid], comps[pid]
        roll = rng.random()
        country = "US" if roll < 0.85 else ("GB" if roll < 0.95 else "DE")
        phone: str | None = None
        if rng.random() < 0.75:
            if people and rng.random() < 0.12:
                # a household: same line and surname as the previous person, a different person
                prev = people[-1]
                last, country = prev.last, prev.country
                while first == prev.first:  # two people of one household rarely share a name
                    first = rng.choice(FIRST_NAMES)
                phone = prev.phone or _phone(rng, country)
            else:
                phone = _phone(rng, country)
        f, la = _slug(first), _slug(last)
        work = ""
        # j.smith@ / jo.smith@ / john.smith2@: namesakes at one company get different addresses
        for local in (f"{f}.{la}", f"{f[0]}.{la}", f"{f[:2]}.{la}", f"{f}{la[0]}", f"{f}.{la}{pid % 97}"):
            candidate = f"{local}@{company.domain}"
            if candidate not in work_taken:
                work = candidate
                break
        work = work or f"{f}.{la}.{pid}@{company.domain}"
        work_taken.add(work)
        domain = rng.choices(personal_domains, personal_weights)[0]
        personal = ""
        for local in (f"{f}.{la}", f"{f}{la}{rng.randint(1, 99)}", f"{la}.{f}{rng.randint(100, 9999)}"):
            candidate = f"{local}@{domain}"
            if candidate not in personal_taken:
                personal = candidate
                break
        personal = personal or f"{f}.{la}.{pid}@{domain}"
        personal_taken.add(personal)
        people.append(
            _Person(
                pid=pid,
                first=first,
                last=last,
                company=company,
                work_email=work,
                personal_email=personal,
                country=country,
                phone=phone,
                helpdesk_id=f"HD-{pid * 7919 % 10_000_019:08d}",
                title=rng.choice(JOB_TITLES),
            )
        )
    return people


def _phone(rng: random.Random, country: str) -> str:
    if country == "US":
        return f"+1{rng.choice(US_AREA_CODES)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
    if country == "GB":
        return f"+4420{rng.randint(7000, 8999)}{rng.randint(0, 9999):04d}"
    return f"+4930{rng.randint(1000000, 99999999)}"


# ---------------------------------------------------------------------------------------------
# Corruptions
# ---------------------------------------------------------------------------------------------


def _vary_email(rng: random.Random, email: str) -> str:
    local, _, domain = email.partition("@")
    roll = rng.random()
    if domain == "gmail.com":
        if roll < 0.15:
            local = local.replace(".", "")
        elif roll < 0.25:
            local = f"{local}+{rng.choice(('news', 'crm', 'events'))}"
        elif roll < 0.30:
            domain = "googlemail.com"
    elif domain in ("outlook.com", "hotmail.com", "icloud.com") and roll < 0.1:
        local = f"{local}+lists"
    text = f"{local}@{domain}"
    roll = rng.random()
    if roll < 0.15:
        text = text.title() if rng.random() < 0.5 else text.upper()
    elif roll < 0.20:
        text = f" {text} "
    return text


def _typo(rng: random.Random, text: str) -> str:
    if len(text) < 4:
        return text
    i = rng.randrange(1, len(text) - 1)
    kind = rng.random()
    if kind < 0.4:
        return text[:i] + text[i + 1 :]  # deletion
    if kind < 0.7:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]  # transposition
    return text[:i] + rng.choice("aeiourstln") + text[i + 1 :]  # substitution


def _vary_name(rng: random.Random, name: str, *, first: bool) -> str:
    roll = rng.random()
    if first and roll < 0.12 and name in NICKNAME_OF:
        name = NICKNAME_OF[name]
    elif roll < 0.22:
        name = _ascii(name)  # accents dropped by the form
    elif roll < 0.24:
        name = _typo(rng, name)
    roll = rng.random()
    if roll < 0.08:
        return name.upper()
    if roll < 0.12:
        return name.lower()
    return name


def _vary_phone(rng: random.Random, e164: str, country: str) -> tuple[str, str]:
    """(as written, country column) for a dialler row."""
    roll = rng.random()
    if roll < 0.03:
        return rng.choice(("n/a", "555-01", "000", "unknown")), country  # junk the rep typed
    if country == "US":
        n = e164[2:]
        area, exch, sub = n[:3], n[3:6], n[6:]
        style = rng.random()
        if style < 0.3:
            text = f"({area}) {exch}-{sub}"
        elif style < 0.5:
            text = f"{area}.{exch}.{sub}"
        elif style < 0.7:
            text = f"+1 {area} {exch} {sub}"
        elif style < 0.85:
            text = f"1-{area}-{exch}-{sub}"
        else:
            text = f"{area}{exch}{sub}"
    else:
        national = "0" + e164[3:]
        text = e164 if rng.random() < 0.5 else f"{national[:3]} {national[3:7]} {national[7:]}"
    if rng.random() < 0.05:
        text = f"{text} x{rng.randint(10, 999)}"
    return text, country


def _vary_company(rng: random.Random, name: str) -> str:
    roll = rng.random()
    suffix = rng.choice(COMPANY_SUFFIXES)
    text = f"{name} {suffix}".strip() if roll < 0.5 else name
    if rng.random() < 0.1:
        text = text.upper()
    elif rng.random() < 0.05:
        text = f"{name}, {suffix or 'Inc.'}"
    return text


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def write_lead_files(out_dir: Path, *, people: int, seed: int) -> list[LeadFile]:
    """Write the four source files and ``truth.csv`` to ``out_dir``; ~5 rows per person in all."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    crowd = _people(rng, people)
    total_rows = people * 5
    truth_path = out_dir / "truth.csv"
    files: list[LeadFile] = []
    with truth_path.open("w", newline="", encoding="utf-8") as truth_fh:
        truth = csv.writer(truth_fh)
        truth.writerow(["source", "source_record_id", "person_id"])
        for source, share in SOURCE_SHARES:
            rows = int(total_rows * share)
            path, id_column = _write_source(rng, out_dir, source, crowd, rows, truth)
            files.append(LeadFile(path=path, source=source, id_column=id_column))
    return files


def _audience(rng: random.Random, crowd: list[_Person], source: str) -> list[_Person]:
    """Who turns up in a source: not everyone uses every channel."""
    reach = {"web_form": 0.7, "dialler": 0.6, "event": 0.45, "support": 0.4}[source]
    members = [p for p in crowd if rng.random() < reach]
    if source == "dialler":
        members = [p for p in members if p.phone]
    return members or crowd[:1]


def _write_source(
    rng: random.Random, out_dir: Path, source: str, crowd: list[_Person], rows: int, truth: csv.writer
) -> tuple[Path, str | None]:
    audience = _audience(rng, crowd, source)
    picks = rng.choices(audience, k=rows)
    path = out_dir / f"{source}.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        if source == "web_form":
            out.writerow(
                ["Submission ID", "Email", "First Name", "utm_campaign", "utm_medium", "Submitted At"]
            )
        elif source == "dialler":
            out.writerow(["call_id", "Full Name", "Phone", "E-mail", "Country", "called_at"])
        elif source == "event":
            out.writerow(
                ["registration_id", "First Name", "Last Name", "Email Address", "Company", "Job Title"]
            )
        else:
            out.writerow(["ticket_id", "Requester Name", "Requester Email", "helpdesk_user_id", "created_at"])
        for i, person in enumerate(picks):
            when = (BASE_TIME + timedelta(minutes=rng.randint(0, 500_000))).isoformat()
            record_id = f"{source[:2].upper()}-{i + 1:07d}"
            if source == "web_form":
                email = person.personal_email if rng.random() < 0.6 else person.work_email
                if rng.random() < 0.005:
                    email = _typo(rng, email)
                first = _vary_name(rng, person.first, first=True) if rng.random() < 0.5 else ""
                out.writerow(
                    [
                        record_id,
                        _vary_email(rng, email),
                        first,
                        rng.choice(CAMPAIGNS),
                        rng.choice(MEDIUMS),
                        when,
                    ]
                )
            elif source == "dialler":
                assert person.phone is not None
                first = _vary_name(rng, person.first, first=True)
                last = _vary_name(rng, person.last, first=False)
                style = rng.random()
                full = (
                    f"{last}, {first}"
                    if style < 0.2
                    else (f"{last} {first}" if style < 0.23 else f"{first} {last}")
                )
                phone, country = _vary_phone(rng, person.phone, person.country)
                email = "" if rng.random() < 0.25 else _vary_email(rng, person.personal_email)
                out.writerow([record_id, full, phone, email, country, when])
            elif source == "event":
                email = person.work_email if rng.random() < 0.7 else person.personal_email
                out.writerow(
                    [
                        record_id,
                        _vary_name(rng, person.first, first=True),
                        _vary_name(rng, person.last, first=False),
                        _vary_email(rng, email),
                        _vary_company(rng, person.company.name),
                        person.title,
                    ]
                )
            else:
                email = person.work_email if rng.random() < 0.5 else person.personal_email
                name = (
                    f"{_vary_name(rng, person.first, first=True)} {_vary_name(rng, person.last, first=False)}"
                )
                out.writerow([record_id, name, _vary_email(rng, email), person.helpdesk_id, when])
            truth.writerow([source, record_id, person.pid])
    return path, {"web_form": "Submission ID", "dialler": "call_id", "event": "registration_id"}.get(
        source, "ticket_id"
    )
