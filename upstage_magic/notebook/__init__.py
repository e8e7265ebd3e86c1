"""The notebook front ends: the magics, the chat widget, batch runs, and how they show answers.

Everything that knows IPython, ipywidgets or anywidget lives here; it plans requests with
:mod:`upstage_magic.request`, drives them through :class:`upstage_magic.session.Exchange`
and shows them with :mod:`.display`. See ARCHITECTURE.md for what each layer may import.
"""
