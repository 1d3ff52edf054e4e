"""An agent whose tools come from an MCP server: the notes server of examples/mcp/.

``mcp("notes")`` offers the tools the server ``[mcp.notes]`` of the config lists
(names, descriptions and input schemas, listed once when the run starts); the model
calls them like Python tools, under the server's concurrency cap. ``delete_note``
needs a person's approval: a record whose agent calls it waits for review
(``fanout review list``, ``fanout review approve ID``) and running the job again
resumes it at that turn. Offline, on the simulated provider::

    fanout run examples/pipelines/mcp_agent.py:dag --config examples/mcp/fanout.toml \\
        -i examples/data/notes_tasks.jsonl -o out/mcp
"""

from fanout import DAG, mcp

dag = DAG("notes_agent", description="Answer or tidy up with the notes MCP server's tools.")
task = dag.input("task")
answer = dag.llm(
    "fast",
    "Use the notes tools when they help. Task: {task}",
    tools=[mcp("notes", approval=["delete_note"])],
    max_steps=4,
    max_tokens=160,
    name="answer",
)
dag.output(answer=answer)
