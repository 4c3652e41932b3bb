"""Which Clio contact and matter an expense belongs to (docs/purchases.md, "Which matter").

A :class:`MatterResolver` lives for one run. It answers from stored links first, then from Clio,
and caches every Clio answer so a run never asks about the same contact or client twice. When
many names must be looked up it reads the whole contact (or matter) list once instead of
searching name by name; either way the answers are the same.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hardcost.sync.clio import ClioClient, Contact, Matter, User
from hardcost.sync.rules import PlannedEntry
from hardcost.sync.store import WaitReason

BULK_THRESHOLD = 10
"""Above this many names (or clients) to look up, list everything once instead — provided the
list takes fewer pages than there are names to search."""


def _words(name: str | None) -> list[str]:
    if not name:
        return []
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = text.replace("&", " and ")
    return re.sub(r"[^\w\s]", " ", text).split()


def normalise_name(name: str | None) -> str:
    """Case, accents, punctuation, spacing and word order do not make two names different.

    "Smith, Jane" (a common QuickBooks display name) is the same as Clio's "Jane Smith".
    """
    return " ".join(sorted(_words(name)))


def normalise_text(text: str | None) -> str:
    """Like :func:`normalise_name` but keeping word order: "Smith v. Jones" is not
    "Jones v. Smith"."""
    return " ".join(_words(text))


def search_term(name: str) -> str:
    """What to ask Clio's contact search for: the name's longest word.

    Clio's ``query`` is a wildcard text search; one distinctive word finds the contact however
    the rest is punctuated or ordered, and the exact comparison happens here.
    """
    words = _words(name)
    return max(words, key=len) if words else name.strip()


def normalise_email(email: str | None) -> str:
    return (email or "").strip().casefold()


def root_name(fully_qualified: str) -> str:
    """The top customer of a "Parent:Child" name: sub-customers resolve through it."""
    return fully_qualified.split(":", 1)[0].strip()


def leaf_name(fully_qualified: str) -> str:
    return fully_qualified.rsplit(":", 1)[-1].strip()


@dataclass(frozen=True)
class Resolution:
    """Where an expense goes, or why it must wait and what a person can choose from."""

    contact: Contact | None = None
    matter: Matter | None = None
    reason: WaitReason | None = None
    candidates: tuple[dict[str, Any], ...] = ()
    contact_source: str | None = None  # "stored" | "name" | "email"

    @property
    def resolved(self) -> bool:
        return self.matter is not None


@dataclass
class CustomerInfo:
    """What QuickBooks knows of a customer beyond its name (read only when needed)."""

    email: str | None = None
    parent_email: str | None = None


@dataclass
class MatterResolver:
    clio: ClioClient
    stored_contacts: Mapping[tuple[str, str], int]
    """(qbo type, qbo id) → Clio contact id, from the contact_links table."""
    customer_info: Mapping[str, CustomerInfo] = field(default_factory=dict)
    _contacts_by_name: dict[str, list[Contact]] = field(default_factory=dict)
    _contacts_by_email: dict[str, list[Contact]] = field(default_factory=dict)
    _all_contacts_loaded: bool = False
    _searched: set[str] = field(default_factory=set)
    _matters: dict[int, list[Matter]] = field(default_factory=dict)
    _users: list[User] | None = None
    new_links: dict[tuple[str, str], int] = field(default_factory=dict)
    """Automatic matches made this run, for the caller to remember."""

    # -- contacts -------------------------------------------------------------------------

    def _index(self, contacts: Iterable[Contact]) -> None:
        for contact in contacts:
            by_name = self._contacts_by_name.setdefault(normalise_name(contact.name), [])
            if all(c.id != contact.id for c in by_name):
                by_name.append(contact)
            if contact.email:
                by_email = self._contacts_by_email.setdefault(normalise_email(contact.email), [])
                if all(c.id != contact.id for c in by_email):
                    by_email.append(contact)

    def _lookup(self, text: str) -> None:
        key = text.casefold()
        if self._all_contacts_loaded or key in self._searched or not text:
            return
        self._searched.add(key)
        self._index(self.clio.search_contacts(text))

    def prepare(self, entries: Iterable[PlannedEntry]) -> None:
        """Read what this batch needs from Clio in as few calls as possible."""
        names: set[str] = set()
        for entry in entries:
            if ("Customer", entry.key.customer_id) not in self.stored_contacts:
                names.add(root_name(entry.customer_name))
            if entry.payee and entry.payee.type == "Vendor" and \
                    ("Vendor", entry.payee.id) not in self.stored_contacts:
                names.add(entry.payee.name)
        if len(names) > BULK_THRESHOLD and not self._all_contacts_loaded:
            # Listing everything wins only while it takes fewer calls than searching each name.
            contacts, complete = self.clio.contacts_within(max_pages=len(names))
            self._index(contacts)
            self._all_contacts_loaded = complete

    def contact_candidates_by_name(self, name: str) -> list[Contact]:
        self._lookup(search_term(name))
        return list(self._contacts_by_name.get(normalise_name(name), []))

    def contact_candidates_by_email(self, email: str) -> list[Contact]:
        self._lookup(email)
        return list(self._contacts_by_email.get(normalise_email(email), []))

    def resolve_contact(self, customer_id: str, customer_name: str) -> Resolution:
        stored = self.stored_contacts.get(("Customer", customer_id))
        if stored is None:
            stored = self.new_links.get(("Customer", customer_id))
        if stored is not None:
            return Resolution(contact=Contact(stored, customer_name, "", None),
                              contact_source="stored")
        by_name = self.contact_candidates_by_name(root_name(customer_name))
        if len(by_name) == 1:
            self.new_links[("Customer", customer_id)] = by_name[0].id
            return Resolution(contact=by_name[0], contact_source="name")
        info = self.customer_info.get(customer_id)
        emails = [e for e in ((info.email, info.parent_email) if info else ()) if e]
        for email in emails:
            by_email = self.contact_candidates_by_email(email)
            if len(by_email) == 1:
                self.new_links[("Customer", customer_id)] = by_email[0].id
                return Resolution(contact=by_email[0], contact_source="email")
            if len(by_email) > 1 and not by_name:
                by_name = by_email
        if by_name:
            return Resolution(reason=WaitReason.SEVERAL_CONTACTS,
                              candidates=tuple(_contact_choice(c) for c in by_name))
        return Resolution(reason=WaitReason.NO_CONTACT)

    def needs_customer_info(self, entry: PlannedEntry) -> bool:
        """True when the name alone did not settle the contact and an email might."""
        if ("Customer", entry.key.customer_id) in self.stored_contacts:
            return False
        return len(self.contact_candidates_by_name(root_name(entry.customer_name))) != 1

    # -- matters --------------------------------------------------------------------------

    def prefetch_matters(self, contact_ids: set[int]) -> None:
        missing = contact_ids - self._matters.keys()
        if len(missing) > BULK_THRESHOLD:
            matters, complete = self.clio.open_matters_within(max_pages=len(missing))
            if not complete:
                return  # cheaper to ask client by client (matters_of)
            grouped: dict[int, list[Matter]] = defaultdict(list)
            for matter in matters:
                if matter.client_id is not None:
                    grouped[matter.client_id].append(matter)
            for contact_id in missing:
                self._matters[contact_id] = grouped.get(contact_id, [])
            for contact_id, matters in grouped.items():
                self._matters.setdefault(contact_id, matters)

    def matters_of(self, contact_id: int) -> list[Matter]:
        if contact_id not in self._matters:
            self._matters[contact_id] = self.clio.open_matters(contact_id)
        return self._matters[contact_id]

    def resolve(self, entry: PlannedEntry) -> Resolution:
        found = self.resolve_contact(entry.key.customer_id, entry.customer_name)
        if found.contact is None:
            return found
        return self.choose_matter(entry, found.contact, found.contact_source)

    def choose_matter(self, entry: PlannedEntry, contact: Contact,
                      source: str | None = None) -> Resolution:
        matters = self.matters_of(contact.id)
        if len(matters) == 1:
            return Resolution(contact=contact, matter=matters[0], contact_source=source)
        if not matters:
            return Resolution(contact=contact, reason=WaitReason.NO_MATTER,
                              contact_source=source)
        hinted = matters_hinted(entry, matters)
        if len(hinted) == 1:
            return Resolution(contact=contact, matter=hinted[0], contact_source=source)
        return Resolution(contact=contact, reason=WaitReason.SEVERAL_MATTERS,
                          candidates=tuple(_matter_choice(m) for m in matters),
                          contact_source=source)

    # -- vendors and users ----------------------------------------------------------------

    def vendor_for(self, entry: PlannedEntry) -> int | None:
        """The Clio contact for a Vendor payee, when exactly one matches its name."""
        payee = entry.payee
        if payee is None or payee.type != "Vendor":
            return None
        key = ("Vendor", payee.id)
        stored = self.stored_contacts.get(key) or self.new_links.get(key)
        if stored is not None:
            return stored
        found = self.contact_candidates_by_name(payee.name)
        if len(found) == 1:
            self.new_links[key] = found[0].id
            return found[0].id
        return None

    def users(self) -> list[User]:
        if self._users is None:
            self._users = self.clio.users()
        return self._users

    def user_for(self, entry: PlannedEntry, chosen_user_id: int | None) -> int | None:
        """An Employee payee's own Clio user, else the firm's choice, else the account owner."""
        if entry.payee and entry.payee.type == "Employee":
            wanted = normalise_name(entry.payee.name)
            same = [u for u in self.users() if u.enabled and normalise_name(u.name) == wanted]
            if len(same) == 1:
                return same[0].id
        if chosen_user_id is not None:
            return chosen_user_id
        owners = [u for u in self.users() if u.account_owner]
        return owners[0].id if owners else None


def matters_hinted(entry: PlannedEntry, matters: list[Matter]) -> list[Matter]:
    """Matters named by a sub-customer, or whose display number the memo/description quotes."""
    hits: list[Matter] = []
    if ":" in entry.customer_name:
        leaf = normalise_text(leaf_name(entry.customer_name))
        hits = [m for m in matters
                if leaf and leaf in (normalise_text(m.display_number),
                                     normalise_text(m.description))]
        if len(hits) == 1:
            return hits
    texts = " ".join([entry.memo or "", *entry.descriptions])
    quoted = [m for m in matters if m.display_number and re.search(
        rf"(?<![0-9A-Za-z]){re.escape(m.display_number)}(?![0-9A-Za-z])", texts)]
    return quoted if quoted else hits


def _contact_choice(contact: Contact) -> dict[str, Any]:
    return {"kind": "contact", "id": contact.id, "name": contact.name,
            "email": contact.email}


def _matter_choice(matter: Matter) -> dict[str, Any]:
    return {"kind": "matter", "id": matter.id, "display_number": matter.display_number,
            "description": matter.description, "status": matter.status,
            "client_id": matter.client_id}
