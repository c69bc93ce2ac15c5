"""Renderers of the audit report: self-contained HTML with inline SVG plots, and Markdown.

They read the report dict only (analyzer JSON + ``roadmap`` + ``roi`` + ``plots``); nothing here
computes a finding or a projection.
"""
