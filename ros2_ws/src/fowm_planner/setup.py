
from setuptools import find_packages, setup

PACKAGE = "fowm_planner"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    include_package_data=True,
    package_data={PACKAGE: ["**/*.xml", "**/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="fowm-ros maintainers",
    maintainer_email="maintainers@fowm-ros.dev",
    description="Realtime planner node: observation assembly, uncertainty-regularised MPPI, IK, safety, watchdog and weight hot-swap.",
    license="MIT",
    entry_points={
        "console_scripts": [
            "fowm_planner_node = fowm_planner.planner_node:main",
        ],
    },
)
