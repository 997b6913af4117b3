from glob import glob

from setuptools import find_packages, setup

PACKAGE = "fowm_bringup"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    include_package_data=True,
    package_data={PACKAGE: ["**/*.xml", "**/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/gazebo", glob("config/gazebo/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="fowm-ros maintainers",
    maintainer_email="maintainers@fowm-ros.dev",
    description="Launch files, YAML configs, the node-graph runner for pip installs and the Fast DDS profile.",
    license="MIT",
    entry_points={
        "console_scripts": [],
    },
)
