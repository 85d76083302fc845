"""XML to JSON, parsed by defusedxml: a DTD, an entity declaration or an external reference
is refused when the parser meets it, before anything is expanded or fetched.

The mapping (the specification's, that of fast-xml-parser):

    <order id="7"><item>a</item><item>b</item><note lang="en">hi</note><empty/></order>
    {"order": {"@_id": "7", "item": ["a", "b"], "note": {"@_lang": "en", "#text": "hi"},
               "empty": ""}}

- an attribute is a key `@_<name>`; an element a key of its name, a list when it occurs
  more than once among its siblings (or is named in `always_list`);
- an element with neither attributes nor children is its text, trimmed ("" when empty);
- text beside attributes or children goes under `#text`: each run of text between two
  children trimmed, the non-empty runs joined by one space (mixed content keeps its words,
  not where the children stood);
- values stay strings (no guessing at numbers); comments and processing instructions go.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from sidecar.config.transform import XmlToJsonStep

from ._payload import Budget, Kind, Payload, failed, too_deep

__all__ = ["XmlToJson"]

ATTRIBUTE_PREFIX: Final = "@_"
TEXT_KEY: Final = "#text"


@dataclass
class _Element:
    name: str
    attributes: dict[str, str]
    children: dict[str, Any] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    run: list[str] = field(default_factory=list)

    def end_run(self) -> None:
        if self.run:
            text = "".join(self.run).strip()
            if text:
                self.runs.append(text)
            self.run = []

    def value(self) -> Any:
        self.end_run()
        text = " ".join(self.runs)
        if not self.attributes and not self.children:
            return text
        value: dict[str, Any] = {**self.attributes, **self.children}
        if text:
            value[TEXT_KEY] = text
        return value


class _Builder:
    """The parser's target: builds the JSON value as elements end, checking depth and the
    clock as it goes (an exception raised here stops the parser at once)."""

    def __init__(self, options: XmlToJsonStep, budget: Budget) -> None:
        self._strip = options.namespaces == "strip"
        self._always_list = frozenset(options.always_list)
        self._budget = budget
        self._stack: list[_Element] = []
        self._scopes: list[dict[str, str]] = []  # uri -> prefix, one per open element
        self._declared: dict[str, str] = {}  # prefix -> uri, for the next element
        self._root: dict[str, Any] | None = None

    def start_ns(self, prefix: str, uri: str) -> None:
        self._declared[prefix or ""] = uri or ""

    def _name(self, tag: str) -> str:
        if not tag.startswith("{"):
            return tag
        uri, local = tag[1:].split("}", 1)
        if self._strip:
            return local
        for scope in reversed(self._scopes):
            prefix = scope.get(uri)
            if prefix is not None:
                return f"{prefix}:{local}" if prefix else local
        return local

    def start(self, tag: str, attrib: Mapping[str, str]) -> None:
        self._budget.tick()
        if len(self._stack) >= self._budget.max_depth:
            raise too_deep(self._budget.max_depth, self._budget.metadata)
        self._scopes.append({uri: prefix for prefix, uri in self._declared.items()})
        attributes: dict[str, str] = {}
        if not self._strip:
            for prefix, uri in self._declared.items():
                key = f"xmlns:{prefix}" if prefix else "xmlns"
                attributes[ATTRIBUTE_PREFIX + key] = uri
        self._declared = {}
        for key, text in attrib.items():
            attributes[ATTRIBUTE_PREFIX + self._name(key)] = text
        if self._stack:
            self._stack[-1].end_run()
        self._stack.append(_Element(self._name(tag), attributes))

    def data(self, text: str) -> None:
        if self._stack:
            self._stack[-1].run.append(text)

    def end(self, tag: str) -> None:
        element = self._stack.pop()
        self._scopes.pop()
        value = element.value()
        if not self._stack:
            self._root = {element.name: [value] if element.name in self._always_list else value}
            return
        siblings = self._stack[-1].children
        previous = siblings.get(element.name, _ABSENT)
        if previous is _ABSENT:
            siblings[element.name] = [value] if element.name in self._always_list else value
        elif isinstance(previous, _Repeated) or element.name in self._always_list:
            previous.append(value)
        else:
            siblings[element.name] = _Repeated((previous, value))

    def discard(self) -> None:
        """Let go of everything built so far."""
        self._stack.clear()
        self._scopes.clear()
        self._root = None

    def close(self) -> dict[str, Any]:
        if self._root is None:
            raise failed("the input has no root element", self._budget.metadata)
        return self._root


class _Repeated(list[Any]):
    """A list made by repetition (so a third sibling is appended, not nested)."""


_ABSENT: Final = object()


@dataclass(frozen=True)
class XmlToJson:
    """The `xml_to_json` step."""

    options: XmlToJsonStep

    reads: ClassVar[Kind] = "xml"
    writes: ClassVar[Kind] = "json"

    @property
    def label(self) -> str:
        return "xml_to_json"

    def apply(self, payload: Payload, budget: Budget) -> Payload:
        # imported on first use: a sidecar that never converts XML loads no XML parser
        from xml.etree.ElementTree import ParseError

        from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
        from defusedxml.ElementTree import DefusedXMLParser

        assert payload.raw is not None
        builder = _Builder(self.options, budget)
        parser = DefusedXMLParser(
            target=builder,
            forbid_dtd=True,
            forbid_entities=True,
            forbid_external=True,
        )
        try:
            parser.feed(payload.raw)
            return Payload("json", value=parser.close())
        except DTDForbidden:
            problem = "XML with a DTD is refused"
        except EntitiesForbidden:
            problem = "XML declaring entities is refused"
        except DefusedXmlException:  # an external reference (entity or DTD)
            problem = "XML with external references is refused"
        except ParseError as exc:
            problem = f"the input is not well-formed XML: {exc}"
            exc.__traceback__ = None  # it and ElementTree's frame that raised it: a cycle
        except (LookupError, ValueError) as exc:  # an encoding Python does not know
            problem = f"the input cannot be read as XML: {exc}"
        finally:
            # A parser that failed keeps a reference cycle (it and its expat handlers) that
            # only the cycle collector frees, and with it the builder: drop the tree built
            # so far (megabytes, for a document that breaks at its end) now.
            builder.discard()
        raise failed(problem, budget.metadata)
