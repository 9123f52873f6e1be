"""The wizard's look: a dark Catppuccin Mocha palette on ttk's ``clam`` theme.

This is the only module that names colours. Everything else asks for a purpose-named style
(``Title.TLabel``, ``Accent.TButton``...) or a row tag (``ok``, ``bad``...).
Sizes are in font units (``ems``) so the layout grows with Windows display scaling.
"""
from __future__ import annotations

import tkinter as tk
import tkinter.font as tkfont
from tkinter import ttk
from typing import TYPE_CHECKING, Dict

if TYPE_CHECKING:  # pragma: no cover
    from typing import Literal

# Catppuccin Mocha (https://catppuccin.com/palette), the subset we use.
PALETTE: Dict[str, str] = {
    "crust": "#11111b", "mantle": "#181825", "base": "#1e1e2e",
    "surface0": "#313244", "surface1": "#45475a", "surface2": "#585b70",
    "overlay0": "#6c7086", "overlay1": "#7f849c", "overlay2": "#9399b2",
    "subtext0": "#a6adc8", "subtext1": "#bac2de", "text": "#cdd6f4",
    "blue": "#89b4fa", "lavender": "#b4befe", "sapphire": "#74c7ec",
    "green": "#a6e3a1", "yellow": "#f9e2af", "peach": "#fab387", "red": "#f38ba8",
    "mauve": "#cba6f7", "teal": "#94e2d5",
}
P = PALETTE

# Treeview row tags by meaning; steps only use the names.
ROW_TAGS: Dict[str, str] = {"ok": P["green"], "warn": P["yellow"], "bad": P["red"],
                            "muted": P["overlay2"], "info": P["blue"]}

BASE_POINTS = 10  # readable on a 1024x768 screen; sizes are points so scaling applies


def named_font(widget: tk.Misc, name: str) -> tkfont.Font:
    """An existing named font of ``widget``'s interpreter (nametofont(root=) needs 3.10)."""
    return tkfont.Font(root=widget, name=name, exists=True)


def ems(widget: tk.Misc, n: float) -> int:
    """``n`` widths of the letter "m" in the default font, in pixels."""
    return int(round(n * named_font(widget, "TkDefaultFont").measure("m")))


def line_height(widget: tk.Misc) -> int:
    return int(named_font(widget, "TkDefaultFont").metrics("linespace"))


def apply_theme(root: tk.Tk) -> ttk.Style:
    """Configure fonts, ttk styles and the option database of ``root``."""
    _configure_fonts(root)
    style = ttk.Style(root)
    style.theme_use("clam")  # the only built-in theme that honours every colour we set
    _base_styles(root, style)
    _label_styles(style)
    _button_styles(root, style)
    _input_styles(root, style)
    _tree_and_tab_styles(root, style)
    _option_database(root)
    root.configure(background=P["base"])
    return style


def _configure_fonts(root: tk.Tk) -> None:
    # Positive sizes are points: Tk scales them with ``tk scaling`` (Windows DPI), pixels it doesn't.
    for name in ("TkDefaultFont", "TkTextFont", "TkMenuFont", "TkHeadingFont", "TkCaptionFont",
                 "TkTooltipFont", "TkIconFont", "TkSmallCaptionFont"):
        named_font(root, name).configure(size=BASE_POINTS)
    named_font(root, "TkFixedFont").configure(size=BASE_POINTS)
    family = named_font(root, "TkDefaultFont").actual("family")
    _named_font(root, "WizardTitle", family, int(BASE_POINTS * 1.5), "bold")
    _named_font(root, "WizardBold", family, BASE_POINTS, "bold")
    _named_font(root, "WizardBig", family, int(BASE_POINTS * 1.2), "bold")


def _named_font(root: tk.Misc, name: str, family: str, size: int,
                weight: "Literal['normal', 'bold']") -> None:
    if name in tkfont.names(root=root):
        named_font(root, name).configure(family=family, size=size, weight=weight)
    else:
        # Keep the Font object alive: when it is garbage-collected, tkinter deletes the named
        # font, and styles naming it silently fall back to the plain default font.
        font = tkfont.Font(root=root, name=name, family=family, size=size, weight=weight)
        kept = getattr(root, "_wizard_fonts", None)
        if kept is None:
            kept = {}
            setattr(root, "_wizard_fonts", kept)
        kept[name] = font


def _base_styles(root: tk.Misc, style: ttk.Style) -> None:
    style.configure(".", background=P["base"], foreground=P["text"], fieldbackground=P["surface0"],
                    bordercolor=P["surface1"], lightcolor=P["surface0"], darkcolor=P["crust"],
                    troughcolor=P["mantle"], focuscolor=P["lavender"], selectbackground=P["blue"],
                    selectforeground=P["crust"], insertcolor=P["text"], font="TkDefaultFont")
    style.map(".", foreground=[("disabled", P["overlay1"])])
    style.configure("TFrame", background=P["base"])
    style.configure("Sidebar.TFrame", background=P["mantle"])
    style.configure("Bar.TFrame", background=P["mantle"])
    style.configure("TLabelframe", background=P["base"], bordercolor=P["surface1"])
    style.configure("TLabelframe.Label", background=P["base"], foreground=P["subtext1"],
                    font="WizardBold")
    style.configure("TSeparator", background=P["surface1"])
    style.configure("TProgressbar", background=P["blue"], troughcolor=P["surface0"],
                    bordercolor=P["surface1"], lightcolor=P["blue"], darkcolor=P["blue"],
                    thickness=ems(root, 1.2))
    style.configure("TScrollbar", background=P["surface1"], troughcolor=P["mantle"],
                    bordercolor=P["mantle"], arrowcolor=P["subtext1"], gripcount=0,
                    arrowsize=ems(root, 1.2))
    style.map("TScrollbar", background=[("active", P["surface2"])])


def _label_styles(style: ttk.Style) -> None:
    style.configure("TLabel", background=P["base"], foreground=P["text"])
    style.configure("Title.TLabel", font="WizardTitle", foreground=P["lavender"])
    style.configure("Big.TLabel", font="WizardBig")
    style.configure("Bold.TLabel", font="WizardBold")
    style.configure("Hint.TLabel", foreground=P["subtext0"])
    style.configure("Error.TLabel", foreground=P["red"])
    style.configure("Bar.TLabel", background=P["mantle"], foreground=P["subtext1"])
    style.configure("BarError.TLabel", background=P["mantle"], foreground=P["red"])
    style.configure("BarNotice.TLabel", background=P["mantle"], foreground=P["yellow"])
    style.configure("Sidebar.TLabel", background=P["mantle"], foreground=P["subtext0"])
    style.configure("SidebarTitle.TLabel", background=P["mantle"], foreground=P["lavender"],
                    font="WizardBold")
    # Same font in every state: a bold current step would make the sidebar change width.
    style.configure("SidebarCurrent.TLabel", background=P["surface0"], foreground=P["blue"])
    style.configure("SidebarDone.TLabel", background=P["mantle"], foreground=P["green"])
    # Plain-language result banners: dark text on a light colour reads well on any screen.
    for name, colour in (("Good", "green"), ("Bad", "red"), ("Warn", "yellow"),
                         ("Info", "surface1"), ("Busy", "blue")):
        fg = P["text"] if name == "Info" else P["crust"]
        style.configure(name + "Banner.TLabel", background=P[colour], foreground=fg,
                        font="WizardBold")
    style.configure("Badge.TLabel", background=P["surface0"], foreground=P["green"],
                    font="WizardBold", bordercolor=P["green"], relief="solid", borderwidth=1)


def _button_styles(root: tk.Misc, style: ttk.Style) -> None:
    style.configure("TButton", background=P["surface0"], foreground=P["text"],
                    bordercolor=P["surface2"], lightcolor=P["surface0"], darkcolor=P["surface0"],
                    padding=(ems(root, 0.7), ems(root, 0.25)), anchor="center")
    style.map("TButton",
              background=[("disabled", P["mantle"]), ("pressed", P["surface2"]),
                          ("active", P["surface1"])],
              foreground=[("disabled", P["overlay0"])],
              bordercolor=[("focus", P["lavender"])])
    style.configure("Accent.TButton", background=P["blue"], foreground=P["crust"],
                    lightcolor=P["blue"], darkcolor=P["blue"], bordercolor=P["blue"],
                    font="WizardBold")
    style.map("Accent.TButton",
              background=[("disabled", P["surface0"]), ("pressed", P["sapphire"]),
                          ("active", P["lavender"])],
              foreground=[("disabled", P["overlay1"])],
              bordercolor=[("disabled", P["surface1"]), ("focus", P["text"])],
              lightcolor=[("disabled", P["surface0"])], darkcolor=[("disabled", P["surface0"])])
    for name in ("TCheckbutton", "TRadiobutton"):
        style.configure(name, background=P["base"], foreground=P["text"],
                        indicatorbackground=P["surface0"], indicatorforeground=P["blue"],
                        upperbordercolor=P["surface2"], lowerbordercolor=P["surface2"],
                        indicatorsize=ems(root, 0.9), indicatormargin=ems(root, 0.3))
        style.map(name, background=[("active", P["surface0"])],
                  indicatorbackground=[("selected", P["surface0"]), ("pressed", P["surface1"])])


def _input_styles(root: tk.Misc, style: ttk.Style) -> None:
    for name in ("TEntry", "TSpinbox", "TCombobox"):
        style.configure(name, fieldbackground=P["surface0"], foreground=P["text"],
                        insertcolor=P["text"], bordercolor=P["surface2"], arrowcolor=P["text"],
                        background=P["surface1"], lightcolor=P["surface0"], darkcolor=P["surface0"],
                        padding=ems(root, 0.25), arrowsize=ems(root, 0.9))
        style.map(name, bordercolor=[("focus", P["blue"]), ("invalid", P["red"])],
                  fieldbackground=[("readonly", P["surface0"]), ("disabled", P["mantle"])],
                  foreground=[("disabled", P["overlay1"])],
                  lightcolor=[("focus", P["blue"])])


def _tree_and_tab_styles(root: tk.Misc, style: ttk.Style) -> None:
    # Treeview row height is in pixels and does not follow scaling by itself.
    style.configure("Treeview", background=P["mantle"], fieldbackground=P["mantle"],
                    foreground=P["text"], bordercolor=P["surface1"],
                    rowheight=line_height(root) + ems(root, 0.4))
    style.map("Treeview", background=[("selected", P["surface2"])],
              foreground=[("selected", P["text"])])
    style.configure("Treeview.Heading", background=P["surface0"], foreground=P["subtext1"],
                    bordercolor=P["surface1"], font="WizardBold", padding=ems(root, 0.2))
    style.map("Treeview.Heading", background=[("active", P["surface1"])])
    style.configure("TNotebook", background=P["base"], bordercolor=P["surface1"],
                    tabmargins=(0, ems(root, 0.2), 0, 0))
    style.configure("TNotebook.Tab", background=P["mantle"], foreground=P["subtext0"],
                    bordercolor=P["surface1"], padding=(ems(root, 0.8), ems(root, 0.25)))
    style.map("TNotebook.Tab", background=[("selected", P["surface0"])],
              foreground=[("selected", P["text"])])


def _option_database(root: tk.Misc) -> None:
    # Classic Tk widgets (Text, Listbox, dialogs, the combobox drop-down) read these.
    for pattern, value in (("*Background", P["base"]), ("*Foreground", P["text"]),
                           ("*selectBackground", P["blue"]), ("*selectForeground", P["crust"]),
                           ("*insertBackground", P["text"]), ("*highlightColor", P["lavender"]),
                           ("*highlightBackground", P["base"]),
                           ("*activeBackground", P["surface1"]),
                           ("*activeForeground", P["text"]),
                           ("*troughColor", P["mantle"]),
                           ("*TCombobox*Listbox.background", P["surface0"]),
                           ("*TCombobox*Listbox.foreground", P["text"]),
                           ("*Text.background", P["mantle"]), ("*Listbox.background", P["mantle"]),
                           ("*Entry.background", P["surface0"])):
        root.option_add(pattern, value)


def tag_rows(tree: ttk.Treeview) -> None:
    """Give ``tree`` the meaning-named row tags (``ok``, ``warn``, ``bad``, ``muted``, ``info``)."""
    for tag, colour in ROW_TAGS.items():
        tree.tag_configure(tag, foreground=colour)


def style_dialog(window: tk.Toplevel) -> None:
    """A thin outline so a dialog stands out from the window behind it."""
    window.configure(background=P["base"], highlightthickness=1,
                     highlightbackground=P["lavender"], highlightcolor=P["lavender"])
