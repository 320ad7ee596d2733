"""Segments (A7, A8): a small rule language compiled to SQL, built-in lifecycle and RFM segments,
and saved segments evaluated at use time."""

from lists.segments.compiler import compile_rule, segment_contact_ids_query
from lists.segments.lifecycle import LIFECYCLE_STAGES, RFM_GROUPS, Definition
from lists.segments.parser import Node, SegmentSyntaxError, parse_rule, to_text
from lists.segments.store import (
    check_references,
    count_segment,
    create_segment,
    delete_segment,
    get_segment,
    list_segments,
    sample_segment,
)

__all__ = [
    "LIFECYCLE_STAGES",
    "RFM_GROUPS",
    "Definition",
    "Node",
    "SegmentSyntaxError",
    "check_references",
    "compile_rule",
    "count_segment",
    "create_segment",
    "delete_segment",
    "get_segment",
    "list_segments",
    "parse_rule",
    "sample_segment",
    "segment_contact_ids_query",
    "to_text",
]
