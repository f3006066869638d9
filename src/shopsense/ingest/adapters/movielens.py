"""MovieLens 100K (ratings with times) and the 1M copy here (pairs without ratings or times).

Ratings become ``rating`` events with the 1-5 score in ``rating``; genres become the
item's category (the first listed genre) and ``attributes.genres`` (all of them);
user demographics become user attributes. The 1M copy has neither ratings nor
timestamps: its events carry the placeholder time 2000-04-25 (start of the ml-1m
collection) and ``context.time_unknown = true`` — use random splits on it, never temporal.
"""

from __future__ import annotations

from pathlib import Path

from shopsense.domain import RecordKind
from shopsense.ingest.adapters.base import Plan, Step, find_files
from shopsense.ingest.mapping import Mapping
from shopsense.ingest.validate import lit

TAB = "\t"
GENRES_100K = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _table(path: Path, delim: str, names: list[str], encoding: str = "latin-1") -> str:
    cols = ", ".join(f"{lit(n)}: 'VARCHAR'" for n in names)
    return (
        f"read_csv({lit(str(path))}, header=false, delim={lit(delim)}, quote='', escape='', "
        f"encoding={lit(encoding)}, strict_mode=true, columns={{{cols}}})"
    )


class MovieLens100K:
    """Adapter for the ml-100k folder (u.data, u.item, u.user)."""

    name = "movielens-100k"
    folder = "movielens_100k"
    summary = "MovieLens 100K (ratings -> rating events, genres -> categories)"

    def plan(self, paths: list[Path]) -> Plan:
        """Movies, users, then ratings."""
        files = {f.name: f for f in find_files(paths, ["u.item", "u.user", "u.data"], self.name)}
        flags = [f"g{i}" for i in range(len(GENRES_100K))]
        item_cols = ["movie_id", "title", "release_date", "video_release_date", "url", *flags]
        genres = (
            "list_filter(["
            + ", ".join(f"CASE WHEN {f} = '1' THEN {lit(g)} END" for f, g in zip(flags, GENRES_100K, strict=True))
            + "], lambda x: x IS NOT NULL)"
        )
        steps = []
        if "u.item" in files:
            items = f"""SELECT movie_id AS item_id, title, {genres}[1] AS category,
                    json_object('genres', {genres}, 'release_date', release_date, 'imdb_url', url) AS attributes
                FROM {_table(files["u.item"], "|", item_cols)}"""
            steps.append(Step(RecordKind.ITEMS, str(files["u.item"]), items, Mapping(kind=RecordKind.ITEMS)))
        if "u.user" in files:
            users = f"""SELECT user_id, json_object('age', TRY_CAST(age AS INTEGER), 'gender', gender,
                    'occupation', occupation, 'zip', zip) AS attributes
                FROM {_table(files["u.user"], "|", ["user_id", "age", "gender", "occupation", "zip"])}"""
            steps.append(Step(RecordKind.USERS, str(files["u.user"]), users, Mapping(kind=RecordKind.USERS)))
        if "u.data" in files:
            ratings = f"""SELECT user_id, item_id, 'rating' AS type, timestamp, rating
                FROM {_table(files["u.data"], TAB, ["user_id", "item_id", "rating", "timestamp"])}"""
            mapping = Mapping(timestamp_format="unix_s")
            steps.append(Step(RecordKind.EVENTS, str(files["u.data"]), ratings, mapping))
        return Plan(self.name, steps)


class MovieLens1M:
    """Adapter for the ml-1m folder here (implicit pairs, movies.dat, users.dat)."""

    name = "movielens-1m"
    folder = "movielens_1m"
    summary = "MovieLens 1M pairs (no ratings/times here: rating events at a placeholder time)"

    def plan(self, paths: list[Path]) -> Plan:
        """Movies, users, then the user-movie pairs."""
        names = ["movies.dat", "users.dat", "interactions_implicit.csv.gz"]
        files = {f.name: f for f in find_files(paths, names, self.name)}
        steps = []
        if "movies.dat" in files:
            genres = "string_split(genres, '|')"
            items = f"""SELECT movie_id AS item_id, title, {genres}[1] AS category,
                    json_object('genres', {genres}) AS attributes
                FROM {_table(files["movies.dat"], "::", ["movie_id", "title", "genres"])}"""
            steps.append(Step(RecordKind.ITEMS, str(files["movies.dat"]), items, Mapping(kind=RecordKind.ITEMS)))
        if "users.dat" in files:
            cols = ["user_id", "gender", "age", "occupation", "zip"]
            users = f"""SELECT user_id, json_object('gender', gender, 'age', TRY_CAST(age AS INTEGER),
                    'occupation', TRY_CAST(occupation AS INTEGER), 'zip', zip) AS attributes
                FROM {_table(files["users.dat"], "::", cols)}"""
            steps.append(Step(RecordKind.USERS, str(files["users.dat"]), users, Mapping(kind=RecordKind.USERS)))
        if "interactions_implicit.csv.gz" in files:
            path = lit(str(files["interactions_implicit.csv.gz"]))
            pairs = f"""SELECT user_id, movie_id AS item_id, 'rating' AS type, '2000-04-25T00:00:00Z' AS timestamp,
                    '{{"time_unknown": true}}' AS context
                FROM read_csv({path}, all_varchar=true, header=true, strict_mode=true)"""
            steps.append(Step(RecordKind.EVENTS, str(files["interactions_implicit.csv.gz"]), pairs, Mapping()))
        return Plan(self.name, steps)
