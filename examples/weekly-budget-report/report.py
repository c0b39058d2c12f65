#!/usr/bin/env python3
"""Write the weekly budget summary for the latest week in the bundled data.

The example app that `policies/weekly-budget-report.yaml` runs under safe-exec.
It reads `data/transactions.csv` and `data/budget.json`, takes the week that
contains the latest transaction, and writes `weekly-summary-YYYY-MM-DD.md` and
`.json` (named after the week's first day) into the output directory.

Credentials arrive through the pipe that safe-exec opens: the descriptor number
is in SAFE_EXEC_CREDENTIALS_FD and the content is dotenv lines (`KEY="value"`)
or one JSON object. The app only reports whether YNAB_API_KEY was delivered and
how long it is. It never prints the value and makes no network call.

Exit codes: 0 on success, 2 when an input is invalid (the message names the
file and line), 1 when the output cannot be written.

Standard library only.
"""

import argparse
import csv
import datetime as dt
import json
import os
import re
import sys
import tempfile
from collections import defaultdict
from decimal import Decimal, InvalidOperation
from pathlib import Path

TOKEN_KEY = "YNAB_API_KEY"
CREDENTIALS_FD_VAR = "SAFE_EXEC_CREDENTIALS_FD"
CSV_COLUMNS = ["date", "account", "payee", "category", "memo", "outflow", "inflow"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
CENT = Decimal("0.01")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

EXIT_OK = 0
EXIT_WRITE_FAILED = 1
EXIT_BAD_INPUT = 2


class InputError(Exception):
    """An invalid input, with the file and line it was found at."""

    def __init__(self, source, line, message):
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")


# --- credentials -----------------------------------------------------------


def read_credentials():
    """Read the credential pipe named by SAFE_EXEC_CREDENTIALS_FD.

    Returns a dict of key to value, or None when the variable is not set
    (the app was started without safe-exec or without a credentials block).
    """
    fd_text = os.environ.get(CREDENTIALS_FD_VAR)
    if fd_text is None:
        return None
    source = f"credential pipe ({CREDENTIALS_FD_VAR}={fd_text})"
    try:
        fd = int(fd_text)
    except ValueError:
        raise InputError(source, 0, "the variable is not a descriptor number") from None
    try:
        with os.fdopen(fd, "r", encoding="utf-8", newline="") as pipe:
            text = pipe.read()
    except OSError as err:
        raise InputError(source, 0, f"failed to read descriptor {fd}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(source, 0, "the content is not UTF-8") from None

    if text.lstrip().startswith("{"):
        return parse_json_credentials(text, source)
    return parse_dotenv(text, source)


def parse_json_credentials(text, source):
    """Parse the `json` credential format: one object of string keys and values."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        # The message of JSONDecodeError quotes no input, so it is safe to show.
        raise InputError(source, err.lineno, f"invalid JSON: {err.msg}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InputError(source, 1, "expected one JSON object of string values")
    return data


DOUBLE_QUOTE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def parse_dotenv(text, source):
    """Parse `KEY=value` lines as the common dotenv loaders do.

    Handles an `export ` prefix, single-quoted (literal) and double-quoted
    (with backslash escapes) values, both of which may span lines, unquoted
    values, `#` comments, blank lines, a UTF-8 BOM and CRLF line ends. Error
    messages never contain a value.
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    values = {}
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not ENV_NAME.fullmatch(key):
            raise InputError(source, number, "expected KEY=value")
        rest = rest.strip()

        if rest.startswith('"'):
            body = rest[1:]
            while not has_closing_quote(body):
                if index >= len(lines):
                    raise InputError(source, number, f"unterminated double-quoted value of {key}")
                body += "\n" + lines[index]
                index += 1
            value, tail = split_double_quoted(body)
        elif rest.startswith("'"):
            body = rest[1:]
            while "'" not in body:
                if index >= len(lines):
                    raise InputError(source, number, f"unterminated single-quoted value of {key}")
                body += "\n" + lines[index]
                index += 1
            value, _, tail = body.partition("'")
        else:
            value, _, _ = rest.partition(" #")
            value, tail = value.strip(), ""

        if tail.strip() and not tail.strip().startswith("#"):
            raise InputError(source, number, f"unexpected text after the quoted value of {key}")
        values[key] = value
    return values


def has_closing_quote(body):
    """Return True when `body` contains an unescaped double quote."""
    escaped = False
    for char in body:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return True
    return False


def split_double_quoted(body):
    """Split `body` at its closing quote, decoding escapes; returns (value, rest)."""
    out = []
    chars = iter(enumerate(body))
    for position, char in chars:
        if char == "\\":
            following = next(chars, (position, ""))[1]
            out.append(DOUBLE_QUOTE_ESCAPES.get(following, "\\" + following))
        elif char == '"':
            return "".join(out), body[position + 1:]
        else:
            out.append(char)
    return "".join(out), ""


# --- inputs -----------------------------------------------------------------


def parse_money(text, source, line, column):
    """Parse a non-negative amount such as `12.50`; an empty cell is zero."""
    text = text.strip().replace(",", "")
    if not text:
        return Decimal(0)
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise InputError(source, line, f"{column} is {text!r}, not an amount such as 12.50") from None
    if not amount.is_finite() or amount < 0:
        raise InputError(source, line, f"{column} is {text!r}; it must be a positive amount or empty")
    return amount.quantize(CENT)


def load_budget(path):
    """Read budget.json: currency, first day of the week, income categories, weekly budgets."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(source, 0, f"failed to read the budget: {err.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(source, err.lineno, f"invalid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise InputError(source, 1, "expected a JSON object")

    def line_of(key):
        """Return the line on which `"key"` first appears, for error messages."""
        needle = json.dumps(key)
        for number, line in enumerate(text.splitlines(), start=1):
            if needle in line:
                return number
        return 0

    allowed = {"currency", "week_starts_on", "income_categories", "weekly"}
    for key in data:
        if key not in allowed:
            raise InputError(source, line_of(key), f"unknown key {key!r}; expected one of {sorted(allowed)}")

    currency = data.get("currency", "USD")
    if not isinstance(currency, str) or not currency.strip():
        raise InputError(source, line_of("currency"), "currency must be a non-empty string such as USD")

    week_start = data.get("week_starts_on", "monday")
    if not isinstance(week_start, str) or week_start.lower() not in WEEKDAYS:
        raise InputError(source, line_of("week_starts_on"), f"week_starts_on must be one of {', '.join(WEEKDAYS)}")

    income = data.get("income_categories", [])
    if not isinstance(income, list) or not all(isinstance(name, str) for name in income):
        raise InputError(source, line_of("income_categories"), "income_categories must be a list of names")

    weekly = data.get("weekly")
    if not isinstance(weekly, dict) or not weekly:
        raise InputError(source, line_of("weekly"), "weekly must map each category to its weekly budget")
    budgets = {}
    for category, amount in weekly.items():
        if isinstance(amount, bool) or not isinstance(amount, (str, int, float)):
            raise InputError(source, line_of(category), f"budget of {category!r} must be an amount such as \"120.00\"")
        budgets[category] = parse_money(str(amount), source, line_of(category), f"budget of {category!r}")

    return {
        "currency": currency.strip(),
        "week_start": WEEKDAYS.index(week_start.lower()),
        "income": set(income),
        "weekly": budgets,
    }


def load_transactions(path):
    """Read transactions.csv; every row needs a date and exactly one of outflow and inflow."""
    source = str(path)
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as err:
        raise InputError(source, 0, f"failed to read the transactions: {err.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise InputError(source, 1, f"the file is empty; expected a header: {','.join(CSV_COLUMNS)}")
        missing = [column for column in CSV_COLUMNS if column not in reader.fieldnames]
        if missing:
            raise InputError(source, 1, f"missing column(s) {', '.join(missing)} in the header")

        transactions = []
        try:
            for row in reader:
                line = reader.line_num
                if None in row or any(value is None for value in row.values()):
                    raise InputError(source, line, f"expected {len(reader.fieldnames)} fields")
                try:
                    date = dt.date.fromisoformat(row["date"].strip())
                except ValueError:
                    raise InputError(source, line, f"date {row['date']!r} is not YYYY-MM-DD") from None
                category = row["category"].strip()
                if not category:
                    raise InputError(source, line, "category is empty")
                outflow = parse_money(row["outflow"], source, line, "outflow")
                inflow = parse_money(row["inflow"], source, line, "inflow")
                if outflow and inflow:
                    raise InputError(source, line, "both outflow and inflow are set; use one column per row")
                if not outflow and not inflow:
                    raise InputError(source, line, "neither outflow nor inflow is set")
                transactions.append({
                    "date": date,
                    "payee": row["payee"].strip(),
                    "category": category,
                    "amount": inflow - outflow,
                })
        except csv.Error as err:
            raise InputError(source, reader.line_num, f"invalid CSV: {err}") from None
        except UnicodeDecodeError:
            raise InputError(source, reader.line_num + 1, "the line is not UTF-8") from None

    if not transactions:
        raise InputError(source, 0, "no transactions after the header")
    return transactions


# --- summary ----------------------------------------------------------------


def week_bounds(day, week_start):
    """Return the first and last day of the week that contains `day`."""
    first = day - dt.timedelta(days=(day.weekday() - week_start) % 7)
    return first, first + dt.timedelta(days=6)


def summarize(transactions, budget, week_of=None):
    """Compute spending per category against the weekly budget for one week.

    The week is the one that contains `week_of`, or the latest transaction.
    Refunds (inflows in a spending category) reduce that category's spending.
    """
    day = week_of or max(t["date"] for t in transactions)
    first, last = week_bounds(day, budget["week_start"])
    previous_first = first - dt.timedelta(days=7)

    spent = defaultdict(Decimal)
    previous = defaultdict(Decimal)
    income = Decimal(0)
    count = 0
    for t in transactions:
        if first <= t["date"] <= last:
            count += 1
            if t["category"] in budget["income"]:
                income += t["amount"]
            else:
                spent[t["category"]] -= t["amount"]
        elif previous_first <= t["date"] < first and t["category"] not in budget["income"]:
            previous[t["category"]] -= t["amount"]

    categories = []
    for name in list(budget["weekly"]) + sorted(set(spent) - set(budget["weekly"])):
        limit = budget["weekly"].get(name)
        amount = spent.get(name, Decimal(0))
        categories.append({
            "category": name,
            "budget": limit,
            "spent": amount,
            "previous_week": previous.get(name, Decimal(0)),
            "remaining": None if limit is None else limit - amount,
            "status": category_status(amount, limit),
        })

    total_budget = sum(budget["weekly"].values(), Decimal(0))
    total_spent = sum(spent.values(), Decimal(0))
    return {
        "week_start": first,
        "week_end": last,
        "currency": budget["currency"],
        "transactions": count,
        "categories": categories,
        "over_budget": [c["category"] for c in categories if c["status"] == "over"],
        "unbudgeted": [c["category"] for c in categories if c["status"] == "unbudgeted"],
        "total_budget": total_budget,
        "total_spent": total_spent,
        "total_remaining": total_budget - total_spent,
        "income": income,
        "net": income - total_spent,
    }


def category_status(spent, limit):
    """Return `unbudgeted`, `over` or `ok` for a category's spending against its budget."""
    if limit is None:
        return "unbudgeted"
    if spent > limit:
        return "over"
    return "ok"


def money(amount, currency):
    """Format an amount with its currency, such as `-12.50 USD`."""
    return "-" if amount is None else f"{amount:,.2f} {currency}"


def render_markdown(summary, source_note):
    """Render the summary as a Markdown report."""
    cur = summary["currency"]
    lines = [
        f"# Weekly budget summary: {summary['week_start']} to {summary['week_end']}",
        "",
        f"{summary['transactions']} transactions. {source_note}",
        "",
        "| Category | Budget | Spent | Remaining | Previous week | Status |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for c in summary["categories"]:
        status = {"over": "**over budget**", "ok": "ok", "unbudgeted": "no budget"}[c["status"]]
        lines.append(
            f"| {c['category']} | {money(c['budget'], cur)} | {money(c['spent'], cur)} | "
            f"{money(c['remaining'], cur)} | {money(c['previous_week'], cur)} | {status} |"
        )
    lines += [
        "",
        "## Totals",
        "",
        f"- Budget: {money(summary['total_budget'], cur)}",
        f"- Spent: {money(summary['total_spent'], cur)}",
        f"- Remaining: {money(summary['total_remaining'], cur)}",
        f"- Income: {money(summary['income'], cur)}",
        f"- Net (income minus spending): {money(summary['net'], cur)}",
        "",
        "## Over budget",
        "",
    ]
    over = [c for c in summary["categories"] if c["status"] == "over"]
    if over:
        lines += [f"- {c['category']}: {money(-c['remaining'], cur)} over" for c in over]
    else:
        lines.append("No category is over budget.")
    if summary["unbudgeted"]:
        lines += ["", "## Spending without a budget", ""]
        lines += [f"- {c['category']}: {money(c['spent'], cur)}" for c in summary["categories"]
                  if c["status"] == "unbudgeted"]
    return "\n".join(lines) + "\n"


def to_json(summary, source_note):
    """Return the summary as JSON-ready data, amounts as strings with two decimals."""

    def plain(value):
        if isinstance(value, Decimal):
            return f"{value:.2f}"
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, list):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    data = plain(summary)
    data["source"] = source_note
    return data


def write_atomically(path, text):
    """Write `text` to `path` through a temporary file in the same directory and a rename."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# --- main -------------------------------------------------------------------


def parse_args(argv):
    app_dir = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description="Write the weekly budget summary for the latest week.")
    parser.add_argument("--data-dir", type=Path, default=app_dir / "data",
                        help="directory with transactions.csv and budget.json (default: data/ beside this script)")
    parser.add_argument("--out-dir", type=Path, default=app_dir / "out",
                        help="directory the summary is written to (default: out/ beside this script)")
    parser.add_argument("--week-of", "--week", type=dt.date.fromisoformat, metavar="YYYY-MM-DD",
                        help="summarise the week that contains this date instead of the latest week")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    try:
        credentials = read_credentials()
        budget = load_budget(args.data_dir / "budget.json")
        transactions = load_transactions(args.data_dir / "transactions.csv")
    except InputError as err:
        print(f"report.py: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT

    if credentials is None:
        source_note = "Offline run from the bundled data."
        print(f"{CREDENTIALS_FD_VAR} is not set: running offline from the bundled data.")
    elif credentials.get(TOKEN_KEY):
        token = credentials[TOKEN_KEY]
        source_note = "Bundled data; the API was not called."
        print(f"{TOKEN_KEY} received: would call the API with a token of {len(token)} characters "
              "(this example makes no network call and reads the bundled data).")
    else:
        source_note = "Offline run from the bundled data."
        print(f"The credential pipe has no {TOKEN_KEY}: running offline from the bundled data.")

    summary = summarize(transactions, budget, args.week_of)
    name = f"weekly-summary-{summary['week_start'].isoformat()}"
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(args.out_dir / f"{name}.md", render_markdown(summary, source_note))
        write_atomically(args.out_dir / f"{name}.json",
                         json.dumps(to_json(summary, source_note), indent=2) + "\n")
    except OSError as err:
        print(f"report.py: failed to write the summary to {args.out_dir}: {err}", file=sys.stderr)
        return EXIT_WRITE_FAILED

    cur = summary["currency"]
    over = ", ".join(summary["over_budget"]) or "none"
    print(f"Week {summary['week_start']} to {summary['week_end']}: spent "
          f"{money(summary['total_spent'], cur)} of {money(summary['total_budget'], cur)}; over budget: {over}.")
    print(f"Wrote {args.out_dir / (name + '.md')} and {name}.json")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
