"""Batch jobs on Apache Spark that produce the same profiles and bundles as the in-process engine.

The online service is unchanged: a Spark job writes a model bundle (``services/bundles.py``) and a
profiles table (``Store.save_profiles``) in the formats ``shopsense serve`` and the marketing commands
already load. Every formula is the in-process one, moved to Spark where it reads events:

- :mod:`.session` builds the one Spark session of a job from a master URL;
- :mod:`.events` reads events (partitioned Parquet, or PostgreSQL over JDBC) and writes partitioned Parquet;
- :mod:`.interactions` weighs (user, item) pairs with time decay, like ``features.interactions``;
- :mod:`.popularity`, :mod:`.cooccurrence` and :mod:`.als` fit the candidate models' learned state;
- :mod:`.profiles` aggregates customer profiles, finished on the driver with ``features.profiles``;
- :mod:`.expressions` compiles the segment expression language to Spark column expressions;
- :mod:`.training` assembles a pipeline bundle whose heads learn from a labelled sample drawn on Spark.

``pyspark`` is an optional extra (``pip install 'shopsense[spark]'``) and is imported only inside
these modules, never when the CLI starts.
"""
