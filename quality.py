"""Data-quality checks: run the declared checks (sql_queries.CHECKS) and judge what they found."""
from dataclasses import dataclass

import sql_queries
import staging


@dataclass
class Outcome:
    check: object       # sql_queries.Check
    found: float        # offending rows, or the measure (a share in percent)
    examples: list      # the first offending keys, as tuples

    @property
    def status(self):
        """pass, warn or fail."""
        return "pass" if self.found <= self.check.threshold else self.check.severity

    def found_text(self):
        if self.check.kind == "null_share":
            return f"{self.found:g}%"
        return staging.plural(int(self.found), "gap" if self.check.kind == "gaps" else "row")

    def examples_text(self):
        kind, rows = self.check.kind, self.examples
        if not rows:
            return ""
        if kind == "gaps":
            return ", ".join(f"none between {a} and {b}" for a, b in rows)
        if kind == "null_share":
            return f"{rows[0][0]} of {rows[0][1]} rows"
        if kind == "freshness":
            return f"newest play {rows[0][0]}, newest log day {rows[0][1]}"
        cols = self.check.columns
        keys = ", ".join(str(r[0]) if len(r) == 1 else "(" + ", ".join(map(str, r)) + ")" for r in rows)
        more = ", ..." if len(rows) >= sql_queries.EXAMPLES else ""
        return (cols[0] if len(cols) == 1 else "(" + ", ".join(cols) + ")") + " " + keys + more

    def describe(self):
        """'plays whose user is not in users: 3 rows (user_id 26)'"""
        examples = self.examples_text()
        return f"{self.check.name}: {self.found_text()}" + (f" ({examples})" if examples else "")


def run(conn, checks):
    """Run [(Check, query)] on conn, in order; return an Outcome each."""
    outcomes = []
    with conn.cursor() as cur:
        for check, query in checks:
            cur.execute(query)
            rows = cur.fetchall()
            found = float(rows[0][-1]) if rows and rows[0][-1] is not None else 0.0
            outcomes.append(Outcome(check, found, [tuple(r[:-1]) for r in rows if len(r) > 1]))
    return outcomes


def counts(outcomes):
    """{pass: n, warn: n, fail: n}"""
    return {s: sum(o.status == s for o in outcomes) for s in ("pass", "warn", "fail")}
