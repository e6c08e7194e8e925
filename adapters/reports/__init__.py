"""Report files: one document model rendered as Markdown, HTML and JSON.
"""
