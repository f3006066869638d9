"""Features and profiles: pure functions of the event history at an explicit ``as_of`` time."""
