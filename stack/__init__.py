"""Everything that runs, renders or tests the stack but is not the API itself.

The API (`services/api/app`) imports none of this; the native runner, the configs' renderers, the
local Docker engine, the test fixtures, the load test and the bench import it normally.
"""
